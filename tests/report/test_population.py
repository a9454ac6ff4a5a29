"""The population report's numbers, privacy and what-if, on a population recorded by Palm."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from palm_middleware.cli.__main__ import main
from palm_middleware.exceptions import ConfigError, InvalidParameterError
from palm_middleware.report import compute_report, open_deployment
from palm_middleware.report.population import _simplex_cells, simplex_cells
from palm_middleware.report.privacy import suppressed
from palm_middleware.stores.memory import MemoryStore
from palm_middleware.stores.sqlite import SQLiteStore

from .seed import CANDIDATE, POLICY, REWARDS, Population, policy, portfolio, seed


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Population]:
    """A deployment folder (palm.yaml, portfolio, policy, SQLite store with a population)."""
    root = tmp_path_factory.mktemp("deployment")
    store = SQLiteStore(root / "palm.db")
    pop = seed(store)
    store.close()
    (root / "portfolio.yaml").write_text(portfolio().to_yaml())
    (root / "policy.yaml").write_text(POLICY)
    (root / "candidate.yaml").write_text(CANDIDATE)
    palm = {"portfolio": "portfolio.yaml", "policy": "policy.yaml", "store": "palm.db"}
    (root / "palm.yaml").write_text(yaml.safe_dump(palm))
    return root, pop


@pytest.fixture(scope="module")
def report(deployment: tuple[Path, Population]) -> dict[str, object]:
    src = open_deployment(deployment[0] / "palm.yaml")
    try:
        return compute_report(src.store, src.portfolio, src.policy, candidate=policy(CANDIDATE))
    finally:
        src.close()


def test_welfare_orders_single_portfolio_oracle(report: dict[str, Any]) -> None:
    w = report["welfare"]
    assert w["users"] == report["population"]["users"] == 3 * 20 + 12 + 3
    assert w["single"] <= w["portfolio"] <= w["oracle"]
    assert 0.0 <= w["gap_closed"] <= 1.0
    # gap_closed is its definition, in the JSON's own numbers
    expected = (w["portfolio"] - w["single"]) / (w["oracle"] - w["single"])
    assert w["gap_closed"] == pytest.approx(expected, abs=1e-5)
    assert w["single"] == pytest.approx(max(w["per_member_everyone"].values()))


def test_welfare_matches_a_direct_computation(deployment: tuple[Path, Population]) -> None:
    """Recompute from the store with numpy: posterior means x reward profiles."""
    root, pop = deployment
    store = SQLiteStore(root / "palm.db")
    try:
        r = compute_report(store, portfolio(), policy())
        prior = np.array([0.4, 0.4, 0.2])
        rows = []
        for key in pop.keys:
            rec = store.get_profile(key)
            post = rec.state.get("posterior") if rec is not None else None
            rows.append(np.array(post["mean"]) if post else prior)
    finally:
        store.close()
    w = np.array(rows)
    scores = w @ np.array(list(REWARDS.values())).T
    assert r["welfare"]["oracle"] == pytest.approx(scores.max(axis=1).mean(), abs=1e-6)
    assert r["welfare"]["single"] == pytest.approx(scores.mean(axis=0).max(), abs=1e-6)


def test_cost_of_the_bounds_names_the_binding_rule(report: dict[str, Any]) -> None:
    cost = report["bounds_cost"]
    rows = {r["rule"]: r for r in cost["rules"]}
    # The humor cap moves the 20 humor lovers off the joker: they lose reward.
    assert rows["humor-cap"]["users_affected"] == 20
    assert rows["humor-cap"]["users_losing"] == 20
    assert rows["humor-cap"]["mean_loss_affected"] > 0.1
    # Losses are split over the rules; the opted-out users are a row; the rows add up to
    # oracle - portfolio, but the 3 opted-out users' row is withheld, with a second row, so
    # neither can be recovered by subtraction.
    assert rows["(opted out)"]["users_affected"] is None
    hidden = [r for r in cost["rules"] if r["reward_lost_per_user"] is None]
    assert len(hidden) >= 2
    shown = sum(r["reward_lost_per_user"] for r in cost["rules"] if r not in hidden)
    w = report["welfare"]
    assert w["oracle"] - w["portfolio"] == pytest.approx(cost["reward_lost_per_user"], abs=1e-5)
    assert shown < cost["reward_lost_per_user"] - 1e-6
    assert cost["users_losing"] is None  # 23 - 20 would give the opted-out row away


def test_what_if_loosening_the_cap_recovers_the_loss(report: dict[str, Any]) -> None:
    wi = report["what_if"]
    assert wi["policy"]["name"] == "report-candidate"
    pop = wi["population"]
    assert pop["users_changing_member"] == 20
    assert pop["welfare"]["portfolio"] > report["welfare"]["portfolio"]
    assert (
        pop["bounds_cost"]["reward_lost_per_user"] < report["bounds_cost"]["reward_lost_per_user"]
    )
    assert "humor-cap" not in {r["rule"] for r in pop["bounds_cost"]["rules"]}
    req = wi["requests"]
    assert req["replayed"] == report["activity"]["requests"] + report["activity"]["blocked"]
    assert req["member_changes"] >= 20
    assert req["newly_blocked"] == 0 and req["no_longer_blocked"] == 0


def test_members_and_activity(report: dict[str, Any]) -> None:
    members = {m["member"]: m for m in report["members"]}
    assert members["careful"]["users"] == 20  # the safety lovers
    assert sum(m["requests"] or 0 for m in members.values()) <= report["activity"]["requests"]
    shares = [m["users_share"] for m in members.values() if m["users_share"] is not None]
    assert sum(shares) <= 1.0 + 1e-9
    act = report["activity"]
    assert act["blocked"] > 0
    pairs = {(r["rule"], r["topic"]): r["requests"] for r in act["rules_by_topic"]}
    assert pairs[("no-weapons", "weapons")] == act["blocked"]
    assert ("medical-careful", "medical") in pairs
    medical = next(t for t in act["topics"] if t["topic"] == "medical")
    assert sum(v or 0 for v in medical["rules_fired"]) > 0


def test_evidence_and_prior(report: dict[str, Any]) -> None:
    assert report["population"]["at_prior"] == 12
    ev = report["evidence"]
    assert ev["users"][0] == 12  # the first bin is exactly "no evidence"
    assert report["audit"]["ok"] is True and report["audit"]["problems"] == 0


def test_simplex_cells_partition_the_triangle() -> None:
    n = 8
    cells = simplex_cells(n)
    assert len(cells) == n * n
    rng = np.random.default_rng(0)
    w = np.vstack([rng.dirichlet([1, 1, 1], 2000), np.eye(3), [[1 / 3] * 3]])
    idx = _simplex_cells(w, n)
    assert idx.min() >= 0 and idx.max() < n * n
    for p, i in zip(w[:50], idx[:50]):  # each point lies inside its cell (barycentric test)
        (a0, b0), (a1, b1), (a2, b2) = cells[i]["corners"]
        m = np.array([[a0 - a2, a1 - a2], [b0 - b2, b1 - b2]])
        lam = np.linalg.solve(m, [p[0] - a2, p[1] - b2])
        assert lam.min() >= -1e-9 and lam.sum() <= 1 + 1e-9


# -- privacy --------------------------------------------------------------------------------


def test_suppression_withholds_small_groups_and_their_complements() -> None:
    assert suppressed([40, 3, 25, 0], 10) == [False, True, True, False]
    assert suppressed([40, 12, 25], 10) == [False, False, False]
    assert suppressed([5, 5], 10) == [True, True]
    assert suppressed([3, 30], 10, partition=False) == [True, False]


def _no_identifiers(text: str, pop: Population) -> None:
    for key in pop.keys:
        assert key not in text
    for user in pop.users:
        assert user not in text and user.split("@")[0] not in text


def test_json_holds_no_user_key_or_id(
    report: dict[str, Any], deployment: tuple[Path, Population]
) -> None:
    _no_identifiers(json.dumps(report), deployment[1])


def test_small_groups_are_withheld(report: dict[str, Any]) -> None:
    # 3 users opted out: below 10, withheld, and not recoverable from the total
    assert report["population"]["opted_out"] is None
    for t in report["activity"]["topics"]:
        if not t["shown"]:
            assert all(v is None for v in t["requests"])


def test_population_below_the_minimum_shows_nothing_per_user() -> None:
    store = MemoryStore()
    pop = seed(store, per_group=2, at_prior=1, opted_out=1)  # 8 users
    r = compute_report(store, portfolio(), policy(), min_group_size=10)
    assert r["population"]["users"] == 8 and r["population"]["shown"] is False
    assert "welfare" not in r and "weights" not in r and "bounds_cost" not in r
    assert all(m["users"] is None for m in r["members"])
    assert all(m["requests"] in (None, 0) for m in r["members"])  # "nobody" is no group
    assert r["activity"]["rules_by_topic"] == []
    assert all(not t["shown"] for t in r["activity"]["topics"])
    _no_identifiers(json.dumps(r), pop)


def test_min_group_size_is_checked() -> None:
    with pytest.raises(InvalidParameterError, match="min_group_size"):
        compute_report(MemoryStore(), portfolio(), policy(), min_group_size=0)


def test_candidate_with_other_traits_is_refused() -> None:
    other = POLICY.replace("[safety, helpfulness, humor]", "[safety, humor, helpfulness]")
    with pytest.raises(InvalidParameterError, match="differ from the portfolio"):
        compute_report(MemoryStore(), portfolio(), policy(), candidate=policy(other))


# -- audit chain ----------------------------------------------------------------------------


def test_a_tampered_audit_record_shows(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "palm.db")
    seed(store, per_group=4, at_prior=0, opted_out=0)
    store.close()
    con = sqlite3.connect(tmp_path / "palm.db")
    with con:
        cols = [r[1] for r in con.execute("PRAGMA table_info(audit)")]
        assert "payload" in cols
        con.execute("DROP TRIGGER audit_no_update")  # an attacker with a SQL shell
        con.execute(
            "UPDATE audit SET payload = replace(payload, 'careful', 'joker') "
            "WHERE rowid = (SELECT min(rowid) FROM audit WHERE kind = 'decision')"
        )
    con.close()
    store = SQLiteStore(tmp_path / "palm.db")
    try:
        r = compute_report(store, portfolio(), policy(), min_group_size=1)
    finally:
        store.close()
    assert r["audit"]["ok"] is False and r["audit"]["problems"] >= 1
    assert "modified" in r["audit"]["first_problems"][0]


# -- palm.yaml and the CLI ------------------------------------------------------------------


def test_deployment_errors_name_the_field(tmp_path: Path) -> None:
    (tmp_path / "portfolio.yaml").write_text(portfolio().to_yaml())
    (tmp_path / "policy.yaml").write_text(POLICY)
    cfg = tmp_path / "palm.yaml"
    cfg.write_text("portfolio: portfolio.yaml\npolicy: policy.yaml\nstore: ':memory:'\n")
    with pytest.raises(ConfigError, match=r"palm\.yaml:3:\d+: store: ':memory:'"):
        open_deployment(cfg)
    cfg.write_text("portfolio: portfolio.yaml\npolicy: policy.yaml\nstore: nothing.db\n")
    with pytest.raises(ConfigError, match="nothing.db does not exist"):
        open_deployment(cfg)
    assert not (tmp_path / "nothing.db").exists()  # a report never creates a database
    cfg.write_text("policy: policy.yaml\n")
    with pytest.raises(ConfigError, match="portfolio: must be a path"):
        open_deployment(cfg)
    cfg.write_text("portfolio: portfolio.yaml\nstore: {kind: postgres}\n")
    with pytest.raises(ConfigError, match="admin/report"):
        open_deployment(cfg)


@pytest.mark.timeout(600)
def test_cli_writes_page_and_json(
    deployment: tuple[Path, Population], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, pop = deployment
    out = tmp_path / "out"
    code = main(
        [
            "report",
            "--deployment",
            str(root / "palm.yaml"),
            "--policy",
            str(root / "candidate.yaml"),
            "-o",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "report.html"), str(out / "report.json")]
    data = json.loads((out / "report.json").read_text())
    assert data["what_if"]["policy"]["name"] == "report-candidate"
    page = (out / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') >= 6
    assert "http://" not in page and "https://" not in page  # nothing fetched: works offline
    _no_identifiers(page, pop)
    # the page shows the JSON's numbers
    assert f"{data['welfare']['portfolio']:.4f}" in page


def test_cli_refuses_mixed_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "p.yaml", "--deployment", "palm.yaml"]) == 2
    assert "--deployment takes no PORTFOLIO" in capsys.readouterr().err
    assert main(["report", "p.yaml", "-o", "x", "--policy", "new.yaml"]) == 2
    assert "need --deployment" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_the_page_renders_when_no_rule_binds(report: dict[str, Any]) -> None:
    """A deployment whose bounds cost nobody anything (no rule row, as the demo's small
    population can give): the cost plot says so instead of failing the whole page."""
    import base64
    import copy
    import io
    import re

    from PIL import Image

    from palm_middleware.report import render_html

    quiet = copy.deepcopy(report)
    quiet["bounds_cost"]["rules"] = []
    quiet.pop("what_if", None)
    page = render_html(quiet)
    assert "Cost of the bounds" in page
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert pngs and all(Image.open(io.BytesIO(base64.b64decode(p))).width > 100 for p in pngs)
