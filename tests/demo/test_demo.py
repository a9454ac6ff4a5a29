"""The main job (`palm demo`) end to end on tiny models: a real LiteLLM proxy on 127.0.0.1.

See ``tiny_deployment.py`` for what the tiny members stand for.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from palm_middleware import ConfigError, InvalidWeightsError
from palm_middleware.cli.__main__ import main
from palm_middleware.demo.deployment import write_deployment
from palm_middleware.demo.users import ScriptedUser, default_users, load_users
from palm_middleware.portfolio.manifest import load_portfolio

from .tiny_deployment import GUARD_RULE

pytest.importorskip("palm_litellm", reason="the demo runs the LiteLLM proxy (make setup)")

USERS = """\
users:
  - {name: ana, about: wants it short, hidden: {brevity: 0.8, structure: 0.2}}
  - {name: ben, about: wants long structured answers, hidden: {brevity: 0.0, structure: 1.0}}
  - {name: cleo, about: balanced, hidden: {brevity: 0.5, structure: 0.5}}
"""


@pytest.fixture(scope="module")
def session(
    tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path, str]:
    out = tmp_path_factory.mktemp("demo-out")
    users = out / "users.yaml"
    users.write_text(USERS)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(
            [
                "demo",
                "--out",
                str(out),
                "--portfolio",
                str(tiny["portfolio"]),
                "--policy",
                str(tiny["policy"]),
                "--base",
                f"tiny={tiny['base']}",
                "--scorers",
                str(tiny["scorers"]),
                "--prompts",
                str(tiny["prompts"]),
                "--users",
                str(users),
                "--rounds",
                "8",
                # The tiny members differ by ~50% of the best value: past the default 40%
                # bound on what an A/B pair may cost, so every pair is allowed here.
                "--pair-cost",
                "1",
                "--no-progress",
            ]
        )
    assert code == 0, buf.getvalue()[-3000:]
    return json.loads((out / "session.json").read_text()), out, buf.getvalue()


def test_every_user_ends_on_the_best_member_within_the_bounds(
    session: tuple[dict[str, Any], Path, str], tiny: dict[str, Path]
) -> None:
    report, _, _ = session
    portfolio = load_portfolio(tiny["portfolio"])
    by_name = {u["name"]: u for u in report["users"]}
    assert set(by_name) == {"ana", "ben", "cleo"}
    for u in report["users"]:
        w = np.array([u["hidden"][t] for t in portfolio.space.names])
        best = portfolio.ids[int(np.argmax(portfolio.rewards @ w))]
        assert u["best_for_hidden"] == best
        assert u["final_member"] == u["best_within_bounds"], u
        assert u["converged"]
    # The two users with opposite tastes end on different members.
    assert by_name["ana"]["final_member"] != by_name["ben"]["final_member"]
    # Their inferred weights moved from the default (0.5/0.5) toward their hidden weights.
    assert by_name["ana"]["inferred"]["brevity"] > 0.55
    assert by_name["ben"]["inferred"]["structure"] > 0.6


def test_the_brevity_cap_clamps_the_user_who_wants_it_short(
    session: tuple[dict[str, Any], Path, str],
) -> None:
    ana = next(u for u in session[0]["users"] if u["name"] == "ana")
    assert "brevity-cap" in ana["rules_fired"]
    assert ana["applied"]["brevity"] == pytest.approx(0.6, abs=1e-6)
    assert ana["inferred"]["brevity"] > 0.6


def test_the_guard_blocks_the_risky_request(session: tuple[dict[str, Any], Path, str]) -> None:
    guard = session[0]["guard"]
    assert guard["blocked_by"] == GUARD_RULE and guard["member"] is None
    assert "can't help" in guard["message"]


def test_rounds_use_ab_choices_and_the_output_reports_them(
    session: tuple[dict[str, Any], Path, str],
) -> None:
    report, out, printed = session
    rounds = report["rounds"]
    assert len(rounds) == 3 * 8
    assert all(r["pair"] is not None and len(set(r["pair"])) == 2 for r in rounds)
    assert sum(r["winner"] is not None for r in rounds) >= len(rounds) // 2
    assert report["latency_s"]["n"] > 0 and report["latency_s"]["p50"] > 0
    assert set(report["timing"]) == {"prepare_s", "proxy_start_s", "session_s"}
    summary = (out / "summary.md").read_text()
    assert "| ana (wants it short) |" in summary and "Guard:" in summary
    assert "3 of 3 users end on the best member within the bounds" in printed


def test_the_store_holds_no_message_text(
    session: tuple[dict[str, Any], Path, str], tiny: dict[str, Path]
) -> None:
    _, out, _ = session
    prompts = yaml.safe_load(tiny["prompts"].read_text())["prompts"]
    con = sqlite3.connect(out / "palm.db")
    try:
        dump = "\n".join(con.iterdump())
    finally:
        con.close()
    assert "pairwise" in dump  # the feedback is there ...
    for p in prompts:
        assert p["text"] not in dump  # ... but no prompt (policy privacy.store: events)


def test_deployment_files_hold_key_digests_only(tiny: dict[str, Path], tmp_path: Path) -> None:
    dep = write_deployment(
        tmp_path / "dep",
        portfolio=tiny["portfolio"],
        policy=tiny["policy"],
        bases={"tiny": tiny["base"]},
        users=["ana", "ben"],
    )
    palm_yaml = dep.palm_config.read_text()
    for key in dep.keys.values():
        assert key not in palm_yaml and key not in dep.config.read_text()
    assert dep.master_key in dep.config.read_text()  # LiteLLM reads its master key from there
    assert stat.S_IMODE(dep.config.stat().st_mode) == 0o600
    groups = [m["model_name"] for m in yaml.safe_load(dep.config.read_text())["model_list"]]
    assert groups == ["auto", "tiny"]  # prompted members are served through their base
    with pytest.raises(ConfigError, match="'tiny'.*--base tiny=DIR"):
        write_deployment(
            tmp_path / "x",
            portfolio=tiny["portfolio"],
            policy=tiny["policy"],
            bases={},
            users=["ana"],
        )


def test_scripted_users_judge_by_hidden_weights() -> None:
    ana = ScriptedUser("ana", {"brevity": 0.8, "structure": 0.2})
    short, long_ = {"brevity": 0.9, "structure": 0.1}, {"brevity": 0.2, "structure": 0.9}
    assert ana.prefers(short, long_) == 0 and ana.prefers(long_, short) == 1
    assert ana.prefers(short, dict(short)) is None
    with pytest.raises(InvalidWeightsError, match="ana"):
        ScriptedUser("ana", {"brevity": 0.8, "structure": 0.8})
    users = default_users(["brevity", "structure", "formality"])
    assert [u.name for u in users] == ["ana", "ben", "chloe", "dev"]
    assert all(abs(sum(u.hidden.values()) - 1) < 1e-9 for u in users)
    # Now and then a user says what they want; the cue lexicon hears it.
    ana_says = [users[0].message("Why is the sky blue?", turn) for turn in range(3)]
    assert ana_says == ["Why is the sky blue?"] * 2 + ["Why is the sky blue? Keep it short."]
    from palm_middleware.preferences.cues import CueLexicon

    lexicon = CueLexicon.default()
    for user, trait in zip(users, ["brevity", "structure", "formality"]):
        found = lexicon.match(user.message("Q?", 2))
        assert [(c.trait, c.direction) for c in found] == [(trait, 1)], user.says


def test_a_bad_users_file_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n  - {name: ana, hidden: {brevity: 0.8}}\n")
    with pytest.raises(ConfigError, match=r"users\.yaml:2:.*hidden.*traits"):
        load_users(path, ["brevity", "structure"])
    path.write_text("users:\n  - {name: ana, hidden: {brevity: 0.9, structure: 0.9}}\n")
    with pytest.raises(ConfigError, match=r"users\.yaml:2:.*sum to 1"):
        load_users(path, ["brevity", "structure"])


def test_proxy_command_uses_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `make demo` passes a relative --out; the proxy runs in the config's folder.
    from palm_middleware.demo.proxy import ProxyProcess

    monkeypatch.chdir(tmp_path)
    proc = ProxyProcess(
        Path("out/demo/config.yaml"), Path("out/demo/palm.yaml"), log=Path("out/demo/proxy.log")
    )
    cmd = proc.command()
    config = Path(cmd[cmd.index("--config") + 1])
    assert config.is_absolute() and config == tmp_path / "out" / "demo" / "config.yaml"
    assert proc.palm_config.is_absolute() and proc.log.is_absolute()


def test_the_demo_writes_the_population_report(
    session: tuple[dict[str, Any], Path, str],
) -> None:
    report, out, printed = session
    data = json.loads((out / "report.json").read_text())
    assert data["population"]["users"] == 3 and data["privacy"]["min_group_size"] == 1
    assert data["activity"]["blocked"] == 1  # the guard's block, per topic
    assert data["audit"]["ok"] is True
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5
    assert f"population report: {out / 'report.html'}" in printed
