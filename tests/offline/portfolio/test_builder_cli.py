from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from palm_middleware.cli.__main__ import main
from palm_middleware.offline.portfolio.builder import build_portfolio, build_with_oracle
from palm_middleware.offline.portfolio.simplex import simplex_sample
from palm_middleware.offline.portfolio.synthetic import lp_front_oracle, lp_front_pool
from palm_middleware.portfolio.manifest import load_portfolio


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("method", ["greedy", "exact"])
def test_build_meets_the_target_over_the_simplex(d: int, method: str) -> None:
    pool = lp_front_pool(d, 120, random_state=d)
    eps, delta = 0.03, 0.01
    res = build_portfolio(
        [f"t{i}" for i in range(d)],
        pool,
        eps,
        delta,
        method=method,  # type: ignore[arg-type]
        n_sample=500,
    )
    cert = res.portfolio.certificate
    assert cert is not None and cert.eps <= eps + 1e-6 and cert.pool_size == 120
    r_pool = np.vstack([c.reward for c in pool])
    w = simplex_sample(d, 20_000, 3)
    opt, val = (w @ r_pool.T).max(axis=1), (w @ res.portfolio.rewards.T).max(axis=1)
    assert np.all(val >= (1 - eps) * opt - delta - 1e-7)
    assert len(res.portfolio) < 120


def test_budget_and_noise_aware() -> None:
    pool = lp_front_pool(2, 80, random_state=0)
    small = build_portfolio(["a", "b"], pool, 0.0, 0.0, max_size=3, method="exact")
    assert len(small.portfolio) <= 3
    assert small.portfolio.certificate is not None and small.portfolio.certificate.eps > 0
    plain = build_portfolio(["a", "b"], pool, 0.05, 0.01, method="exact")
    noisy = build_portfolio(["a", "b"], pool, 0.05, 0.01, method="exact", noise_z=1.0)
    assert len(noisy.portfolio) >= len(plain.portfolio)


def test_build_with_oracle_records_the_search() -> None:
    res = build_with_oracle(
        ["a", "b", "c"], lp_front_oracle(4.0, sigma=0.0, shrink=0.0, random_state=0), 0.4, 0.2
    )
    assert res.search is not None and res.search.certified.all()
    assert res.search.n_oracle_calls <= 217


def _pool_csv(tmp_path: Path, d: int, n: int = 40) -> Path:
    pool = lp_front_pool(d, n, random_state=1)
    names = ["help", "brev", "safety"][:d]
    p = tmp_path / f"pool{d}.csv"
    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", *names, *[f"{t}_se" for t in names]])
        for c in pool:
            w.writerow([c.id, *[f"{x:.6f}" for x in c.reward], *["0.02"] * d])
    return p


def test_cli_grid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["grid", "--dims", "2", "--eps", "0.4", "--delta", "0.2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "w1,w2" and len(lines) == 14
    assert main(["grid", "--dims", "3", "--eps", "0.4", "--delta", "0.2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 218


@pytest.mark.parametrize("d", [2, 3])
def test_cli_build_certify_report(
    tmp_path: Path, d: int, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _pool_csv(tmp_path, d)
    out = tmp_path / "portfolio.yaml"
    assert (
        main(
            [
                "build",
                "--candidates",
                str(pool),
                "--eps",
                "0.05",
                "--delta",
                "0.02",
                "--method",
                "exact",
                "--n-sample",
                "300",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    port = load_portfolio(out)
    assert port.certificate is not None and port.certificate.eps <= 0.05 + 1e-6
    assert port.certificate.additive_gap is not None and port.certificate.pool_size == 40
    assert "kept" in capsys.readouterr().out
    assert main(["certify", str(out), "--pool", str(pool), "--samples", "2000"]) == 0
    text = capsys.readouterr().out
    assert "certified additive gap" in text and "certified multiplicative gap" in text
    rep = tmp_path / "report"
    assert main(["report", str(out), "--pool", str(pool), "-o", str(rep)]) == 0
    names = {p.name for p in rep.glob("*.png")}
    expected = {"value_curves.png"} if d == 2 else {"serving_map.png", "gap_map.png"}
    assert expected | {"usage.png"} == names
    assert all((rep / n).stat().st_size > 1000 for n in names)


def test_cli_build_budget(tmp_path: Path) -> None:
    pool = _pool_csv(tmp_path, 2)
    out = tmp_path / "p.yaml"
    assert (
        main(
            [
                "build",
                "--candidates",
                str(pool),
                "--eps",
                "0.0",
                "--delta",
                "0.0",
                "--max-size",
                "2",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert len(load_portfolio(out)) <= 2


def test_cli_bad_input_reports_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,help,brev\na,0.5,0.5\nb,0.5,1.5\n")
    code = main(
        [
            "build",
            "--candidates",
            str(bad),
            "--eps",
            "0.1",
            "--delta",
            "0.1",
            "-o",
            str(tmp_path / "x.yaml"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.csv:3: brev: reward 'brev' must be in [0, 1]; got 1.5" in err
    assert not (tmp_path / "x.yaml").exists()


def test_cli_certify_trait_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool2 = _pool_csv(tmp_path, 2)
    pool3 = _pool_csv(tmp_path, 3)
    out = tmp_path / "p3.yaml"
    assert (
        main(
            ["build", "--candidates", str(pool3), "--eps", "0.1", "--delta", "0.05", "-o", str(out)]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["certify", str(out), "--pool", str(pool2)]) == 2
    assert "pool2.csv:1: traits: " in capsys.readouterr().err
