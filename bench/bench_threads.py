"""ONNX Runtime thread and spinning settings on a shared host (issue 15): which defaults hold up.

Our engine (fp32 and int8 SmolLM2 folders, as in ``bench_peers.py``) decodes at
``intra_op_threads`` 1 and 2, with ``session.intra_op.allow_spinning`` on and off, each with
and without a competing process (a pure-Python busy loop, i.e. one other core's worth of work,
like another tenant of the host). Every cell is a fresh process; the configurations are
interleaved round by round. Decode tok/s as in ``bench_engine.py`` (prefill excluded).

    python bench/bench_threads.py --ours ~/.cache/palm-middleware/smollm2 \\
        --quant /tmp/peers/quant --rounds 3 --reps 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_engine import _cpu  # noqa: E402
from bench_peers import chat_prompt, spawn  # noqa: E402

BUSY = "while True: pass"
# (intra-op threads, spinning): at 1 thread there is no pool, so nothing spins.
CONFIGS = ((1, False), (2, True), (2, False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ours", required=True, help="fp32 ONNX folder (palm prepare-base)")
    ap.add_argument("--quant", required=True, help="folder with int8/ made by palm quantize")
    ap.add_argument("--precisions", nargs="+", choices=["fp32", "int8"], default=["fp32"])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "threads.md"))
    args = ap.parse_args()
    started = time.perf_counter()
    folders = {"fp32": Path(args.ours).expanduser(), "int8": Path(args.quant) / "int8"}
    prompt = chat_prompt(folders["fp32"])
    runs: dict[tuple[str, bool, int, bool], list[float]] = {}
    precisions = {p: folders[p] for p in args.precisions}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
            try:
                for prec, folder in precisions.items():
                    for t, spin in CONFIGS:
                        extra: dict[str, Any] = {
                            "path": str(folder),
                            "prompt": prompt,
                            "spin": spin,
                        }
                        r = spawn(
                            sys.executable, f"ours-{prec}", t, args.new_tokens, args.reps, extra
                        )
                        runs.setdefault((prec, busy, t, spin), []).append(r["tps"])
                        loads.append(r["load"])
                        print(f"{prec} busy={busy} t={t} spin={spin}: {r['tps']:.1f}", flush=True)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    lines = [
        f"Machine: {_cpu()}, nproc={os.cpu_count()}, Python {platform.python_version()}; load "
        f"average (1 min) before/median/after: {loads[0]:.2f}/{statistics.median(loads):.2f}/"
        f"{os.getloadavg()[0]:.2f} (shared machine; 'busy' adds one more busy-loop process).",
        f"Command: `python bench/bench_threads.py {' '.join(sys.argv[1:])}` "
        f"({time.perf_counter() - started:.0f} s). Decode tok/s, median over {args.rounds} "
        f"rounds (min–max) of the median of {args.reps} runs; ×: vs 1 thread, same precision "
        "and load.",
        "",
        "| precision | competing busy loop | intra-op threads | spinning | decode tok/s | × |",
        "|---|---|---|---|---|---|",
    ]
    for (prec, busy, t, spin), tps in runs.items():
        ref = statistics.median(runs[(prec, busy, 1, False)])
        med = statistics.median(tps)
        lines.append(
            f"| {prec} | {'yes' if busy else 'no'} | {t} | {'on' if spin else 'off'} | "
            f"{med:.1f} ({min(tps):.1f}–{max(tps):.1f}) | {med / ref:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# Thread and spinning settings (issue 15)\n\n" + text)


if __name__ == "__main__":
    main()
