"""What a re-prior follow-up costs: the concentration evidence's draws re-targeted vs drawn anew.

    nice -n 19 python bench/bench_reprior_followup.py [--users 100] [--events 50] [--seed 0]
        [--setting bundled] [--arm palm_api_bundled] [--feedback thumbs] [--evidence retarget]
        [--tolerance 0.05]

Runs one Palm-API arm of ``palm_middleware.offline.simulate`` (the real ``Palm``, sync mode: the
follow-ups run on the caller's thread after each event) and times every
``LearningState.follow_up`` in thread CPU, split into those that put the user under a refitted
population prior (re-prior follow-ups) and the rest. ``--evidence renew`` makes the re-prior
follow-ups draw all evidence draws anew, as before ``PreferenceModel.retarget_evidence``
(for the before/after on one tree); ``--tolerance`` sets ``REPRIOR_TOLERANCE``. Prints the
times, how many re-prior follow-ups re-targeted and the arm's coverage and final prior.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from palm_middleware.offline.simulate import (
    METHODS,
    SimulationConfig,
    run_api_arm,
    with_setting,
)
from palm_middleware.preferences import state
from palm_middleware.preferences.model import PreferenceModel
from palm_middleware.preferences.state import LearningState


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--events", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setting", default="bundled")
    ap.add_argument("--arm", default="palm_api_bundled")
    ap.add_argument("--feedback", default="thumbs", choices=["thumbs", "pairwise"])
    ap.add_argument("--evidence", default="retarget", choices=["retarget", "renew"])
    ap.add_argument("--tolerance", type=float, default=None, help="REPRIOR_TOLERANCE")
    args = ap.parse_args()
    if args.tolerance is not None:
        state.REPRIOR_TOLERANCE = args.tolerance

    times: dict[str, list[float]] = {"reprior": [], "other": []}
    kept = [0, 0]  # re-prior follow-ups whose draws were re-targeted / drawn anew
    flag = {"reprior": False}
    follow_up: Callable[..., bool] = LearningState.follow_up
    reprior: Callable[..., None] = LearningState._reprior
    retarget: Callable[..., PreferenceModel] = PreferenceModel.retarget_evidence

    def timed_follow_up(self: LearningState, key: str) -> bool:
        flag["reprior"] = False
        t0 = time.thread_time()
        out = follow_up(self, key)
        times["reprior" if flag["reprior"] else "other"].append(time.thread_time() - t0)
        return out

    def flagged_reprior(self: LearningState, model: PreferenceModel, policy: Any) -> None:
        flag["reprior"] = True
        reprior(self, model, policy)

    def counted_retarget(self: PreferenceModel) -> PreferenceModel:
        before = self.__dict__.get("_ev_draws")
        if args.evidence == "renew":
            out = self.renew_evidence()
        else:
            out = retarget(self)
        after = self.__dict__.get("_ev_draws")
        same = before is not None and after is not None and after.logy is before.logy
        kept[0 if same else 1] += 1
        return out

    LearningState.follow_up = timed_follow_up  # type: ignore[method-assign]
    LearningState._reprior = flagged_reprior  # type: ignore[method-assign]
    PreferenceModel.retarget_evidence = counted_retarget  # type: ignore[method-assign]

    config = with_setting(
        SimulationConfig(
            n_users=args.users, n_events=args.events, seed=args.seed, feedback=(args.feedback,)
        ),
        args.setting,
    )
    res = run_api_arm(config, args.arm)
    mi = METHODS.index(args.arm)
    cov = 100 * float(np.nanmean(res.coverage[args.feedback][mi][1:]))
    alpha = res.api_fit[args.feedback][args.arm].alpha
    print(
        f"{args.arm} {args.setting} {args.feedback}, {args.users} users x {args.events} events, "
        f"seed {args.seed}, evidence {args.evidence}, tolerance {state.REPRIOR_TOLERANCE:g}: "
        f"cov90 {cov:.1f} %, final prior Σα {alpha.sum():.2f}"
    )
    for kind, ts in times.items():
        ms = 1e3 * np.asarray(ts)
        if ms.size:
            print(
                f"  {kind} follow-ups: {ms.size}, thread CPU mean {ms.mean():.3f} ms, "
                f"p50 {np.percentile(ms, 50):.3f}, p99 {np.percentile(ms, 99):.3f}"
            )
    print(f"  re-prior follow-ups' evidence draws: re-targeted {kept[0]}, drawn anew {kept[1]}")


if __name__ == "__main__":
    main()
