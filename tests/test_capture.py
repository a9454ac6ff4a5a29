"""capture_output: third-party output of a build step goes to its log, summarized in one line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from palm_middleware._capture import capture_output, terminal_stream
from palm_middleware.cli.prepare_base import summary_line
from palm_middleware.offline._progress import progress_bar


def noisy_step() -> None:
    """What torch/transformers/optimum do during an export, one of each kind."""
    warnings.warn("the `license` TOML table is deprecated", DeprecationWarning, stacklevel=1)
    warnings.warn("torch.onnx: constant folding skipped", UserWarning, stacklevel=1)
    log = logging.getLogger("optimum.exporters.onnx.convert")
    for _ in range(3):
        log.warning("[x] values not close enough, max diff: 2.1e-05 (atol: 1e-05)")
    print("Exporting the model...")
    os.write(2, b"[W onnx] native-code warning\n")  # C++ output, below Python


def test_everything_goes_to_the_log_and_is_summarized(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "prepare.log"
    handler = logging.StreamHandler()  # as an unconfigured app's last-resort handler prints
    logging.getLogger("optimum").addHandler(handler)
    try:
        with capture_output(log) as captured:
            assert terminal_stream() is not None
            bar = progress_bar(total=2, desc="step", enabled=True)
            noisy_step()
            bar.update(2)
            bar.close()
    finally:
        logging.getLogger("optimum").removeHandler(handler)
    assert terminal_stream() is None
    out, err = capfd.readouterr()
    assert out == "" and "values not close enough" not in err and "deprecated" not in err
    text = log.read_text()
    for line in (
        "the `license` TOML table is deprecated",
        "constant folding skipped",
        "values not close enough",
        "Exporting the model...",
        "native-code warning",
    ):
        assert line in text
    # Once per handler the logger hierarchy holds: 3 here, more where optimum (the `export`
    # extra, `make demo`) has attached its own handlers in this process.
    assert captured.not_close >= 3 and captured.not_close % 3 == 0
    assert captured.warnings >= 3  # deprecation, UserWarning, native "[W ...] warning"
    summary = captured.summary()
    assert f"{captured.not_close} optimum 'values not close enough' notices" in summary
    assert str(log) in summary and "\n" not in summary


def test_output_restored_after_an_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), capture_output(tmp_path / "x.log"):
        print("inside")
        raise RuntimeError("export failed")
    print("after")
    out, _ = capfd.readouterr()
    assert out == "after\n"
    assert (tmp_path / "x.log").read_text() == "inside\n"


def test_a_child_process_output_is_captured_too(tmp_path: Path) -> None:
    """Exporters may spawn processes (and optimum prints from them): fd-level capture covers it."""
    log = tmp_path / "child.log"
    with capture_output(log) as captured:
        subprocess.run(
            [sys.executable, "-c", "import sys; print('child says hi'); sys.stderr.write('W!\\n')"],
            check=True,
            timeout=60,
        )
    assert "child says hi" in log.read_text() and captured.lines == 2


def test_prepare_base_summary_line(tmp_path: Path) -> None:
    card = {
        "check": {"result": "passed"},
        "base": {"log_summary": "12 lines of third-party output; full log: /x/smollm2.log"},
    }
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    line = summary_line(tmp_path, 84.9)
    assert line == (
        f"base smollm2 at {tmp_path} (84.9 s): PALM check passed (greedy tokens equal to "
        "torch's); 12 lines of third-party output; full log: /x/smollm2.log"
    )


def test_progress_is_plain_lines_off_a_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    """Piped (``make demo | tee``) tqdm would hide itself: a few dated lines show progress."""
    bar = progress_bar(total=3, desc="palm prepare-base", enabled=True, steps=("a", "b", "c"))
    for _ in range(3):
        bar.update(1)
    bar.close()
    long = progress_bar(total=400, desc="palm eval", enabled=True)
    for _ in range(400):
        long.update(1)
    _, err = capfd.readouterr()
    lines = err.splitlines()
    assert lines[:3] == [
        f"      palm prepare-base: {i}/3 {step} done (0.0 min)"
        for i, step in ((1, "a"), (2, "b"), (3, "c"))
    ]
    assert [line.split(" done")[0].strip() for line in lines[3:]] == [
        "palm eval: 100/400",
        "palm eval: 200/400",
        "palm eval: 300/400",
        "palm eval: 400/400",
    ]
    progress_bar(total=3, desc="off", enabled=False).update(3)
    assert capfd.readouterr().err == ""
