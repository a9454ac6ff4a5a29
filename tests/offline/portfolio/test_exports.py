from __future__ import annotations

import importlib

import palm_middleware.offline.portfolio as portfolio


def test_all_is_sorted_and_importable() -> None:
    assert portfolio.__all__ == sorted(portfolio.__all__)
    for name in portfolio.__all__:
        assert hasattr(portfolio, name), name


def test_heavy_modules_stay_lazy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, palm_middleware.offline.portfolio; print(sorted(x for x in "
        "('matplotlib', 'tqdm', 'scipy.optimize') if x in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": "."},
    )
    assert out.stdout.strip() == "[]"
    for mod in ("grid", "build", "certify", "report"):
        importlib.import_module(f"palm_middleware.cli.{mod}")
