"""Why the population fit put Dirichlet(1) users' prior too wide (issue 17: K = 10 thumbs).

    nice -n 10 python bench/bench_strength_fit.py --users 100 --events 1 2 5 20 50 --prior 4 2.9 \
        --draws 50000 --budget 256
    nice -n 10 python bench/bench_strength_fit.py --dynamic --users 100 --events 100 --draws 20000
    nice -n 10 python bench/bench_strength_fit.py --cost --users 20 --events 60

Users with w ~ Dirichlet(a·1) (d = 4, true Σα = 4a) rate members of a K = 10 ℓ2 front with
thumbs (β = 10, 10 % flips), choosing by Thompson draws as in ``palm simulate``, under a prior
of concentration ``--prior`` (the default's 4, and the 2.9 main's simulator ended at). Per
user: palm's concentration evidence as the feedback path computes it (after every event,
``--budget`` new draws at most), the same with the delta-method correction of the log's bias,
the same from 1024 fresh draws, and a brute-force marginal likelihood (``--draws`` prior draws
per candidate, shared by the users; the model's own likelihood, β drawn from the grid's
prior). The three suspected causes of a too-wide fit, separated:

* (c) the estimator: the summed difference from brute force per candidate (nats over all
  users, with its standard error), and the fit from each kind of row;
* (a) the candidate grid (1/8x to 4x the default, main's; 1/8x to 8x, this branch's): the fit
  from the same rows on each;
* (b) the limit: the mean-log EM step's concentration is printed beside the fits.

``--dynamic``: the simulator's refit loop (palm alone, thumbs, K = 10, learned lapse) under
each rule of :data:`RULES`: Σα after the refits and the 90 % coverage of palm's intervals.
``--cost``: thread CPU of ``strength_evidence`` per event as the feedback path calls it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from typing import Any

import numpy as np

from palm_middleware.offline.simulate import lp_front_members, thompson_member
from palm_middleware.preferences.events import Observation
from palm_middleware.preferences.model import PreferenceModel
from palm_middleware.preferences.noise import DEFAULT_BETAS, DEFAULT_LAPSES, NoiseGrid
from palm_middleware.preferences.population import (
    Population,
    dirichlet_from_mean_log,
    strength_candidates,
)
from palm_middleware.types import FloatArray

D, K, BETA, FLIPS = 4, 10, 10.0, 0.1
GRID = NoiseGrid.centred(DEFAULT_BETAS, (0.1,))


def _sigmoid(x: float) -> float:
    return float(0.5 * (1.0 + math.tanh(0.5 * x)))


def users(
    n: int, events: int, prior: float, a: float, seed: int, renew: bool = False
) -> tuple[list[PreferenceModel], FloatArray]:
    """``n`` palm models, each after ``events`` thumbs of its own Dirichlet(a) user
    (``renew``: draws renewed once the observations doubled, as the background upkeep does)."""
    rng = np.random.default_rng(seed)
    R = lp_front_members(K, D, random_state=rng)
    ref = R.mean(axis=0)
    ws = rng.dirichlet(np.full(D, a), size=n)
    models = []
    for u, w in enumerate(ws):
        m = PreferenceModel(
            prior_mean=np.full(D, 1.0 / D),
            prior_strength=prior,
            noise=GRID,
            n_particles=1024,
            random_state=np.random.default_rng([seed, u]),
        ).fit([])
        r = np.random.default_rng([seed, u, 1])
        for t in range(events):
            s = m.summary(0.9)
            i = thompson_member(s.mean, s.sample(1, r)[0], R, 0.2)
            y = 1 if r.random() < _sigmoid(BETA * float(w @ (R[i] - ref))) else -1
            y = -y if r.random() < FLIPS else y
            m.partial_fit([Observation.compare(R[i] - ref, y, ts=t)])
            m.strength_evidence(SYM, budget=256)  # as Palm's feedback path: its draws' state
            if renew and m.evidence_draws_stale_:  # as Palm's background upkeep
                m.renew_evidence()
        models.append(m)
    return models, ws


def brute_force(
    models: list[PreferenceModel], strengths: FloatArray, draws: int, seed: int = 12345
) -> FloatArray:
    """Each user's log marginal likelihood at each candidate (prior draws, shared), relative
    to the user's current prior's: (users, candidates)."""
    rng = np.random.default_rng(seed)
    m0 = models[0]
    mean = m0._alpha / m0._alpha.sum()
    out = np.zeros((len(models), len(strengths) + 1))
    pi = np.exp(m0._logpi)
    for k, s in enumerate([*strengths, float(m0._alpha.sum())]):
        p = rng.dirichlet(np.maximum(s * mean, 1e-2), size=draws)
        g = rng.choice(pi.size, size=draws, p=pi / pi.sum())
        for u, m in enumerate(models):
            ly = m._loglik(p, m._obs, g) @ m._exps
            top = ly.max()
            out[u, k] = top + math.log(float(np.exp(ly - top).mean()))
    return out[:, :-1] - out[:, -1:]


ASYM = 4.0 * 2.0 ** (np.arange(-6, 5) / 2)  # 1/8x .. 4x: the grid before this change
SYM = 4.0 * 2.0 ** (np.arange(-6, 7) / 2)  # 1/8x .. 8x: ``strength_candidates(4)`` now


def static(args: argparse.Namespace) -> None:
    """The estimator against brute force, and the fit from each evidence on each grid."""
    assert np.allclose(SYM, strength_candidates(4.0)) and np.allclose(SYM[:11], ASYM)
    print(
        "| true Σα | prior Σα | events | row | Σ over users of (row − brute force), nats, at "
        + ", ".join(f"{c:.3g}" for c in SYM)
        + " | fit Σα from it, 1/8x-4x / 1/8x-8x |"
    )
    print("|---|---|---|---|---|---|")
    fit_rows = []
    x0 = math.log(4.0)
    for a in args.alpha:
        for prior in args.prior:
            for ev in args.events:
                t0 = time.process_time()
                models, _ = users(args.users, ev, prior, a, args.seed, args.renew)
                n = len(models)
                raw = np.stack([m.strength_evidence(SYM, budget=args.budget) for m in models])
                corr = np.stack([corrected(m, SYM, args.budget) for m in models])
                fresh = []  # 1024 new draws placed at the current posterior (no stale batches)
                for m in models:
                    kept = m.__dict__.pop("_ev_draws", None)
                    fresh.append(m.strength_evidence(SYM))
                    m.__dict__["_ev_draws"] = kept
                bf = brute_force(models, SYM, args.draws)
                bf2 = brute_force(models, SYM, args.draws, seed=54321)
                cur = int(np.argmin(np.abs(SYM - prior)))
                rows = {
                    "palm": raw,
                    "palm, delta-corrected": corr,
                    "palm, fresh draws": np.stack(fresh),
                    "brute force #2": bf2,
                }
                for label, r in rows.items():
                    diff = r - bf
                    diff -= diff[:, cur : cur + 1]  # relative to the current prior
                    bias = diff.sum(axis=0)
                    se = math.sqrt(n) * diff.std(axis=0)  # of the sum (users independent)
                    print(
                        f"| {4 * a:g} | {prior:g} | {ev} | {label} | "
                        + " ".join(f"{b:+.1f}" for b in bias)
                        + f" (s.e. ≤ {se.max():.1f})"
                        + f" | {_fit(r[:, :11], ASYM, x0, n):.2f} / {_fit(r, SYM, x0, n):.2f} |",
                        flush=True,
                    )
                # the mean-log EM step's concentration (from the current prior)
                s = np.mean([m.mean_log_weights() for m in models], axis=0)
                s_sh = (n * s + 20 * _mean_log(np.ones(D))) / (n + 20)
                em = float(dirichlet_from_mean_log(s_sh, np.full(D, prior / D)).sum())
                fits = [_fit(bf[:, :11], ASYM, x0, n), _fit(bf, SYM, x0, n)]
                fits += [_fit(raw[:, :11], ASYM, x0, n), _fit(raw, SYM, x0, n)]
                peak = SYM[int(np.argmax(bf.sum(axis=0)))]
                fit_rows.append(
                    f"| {4 * a:g} | {prior:g} | {ev} | {n} | {peak:.3g} | "
                    + " | ".join(f"{f:.2f}" for f in fits)
                    + f" | {em:.2f} | {time.process_time() - t0:.0f} |"
                )
    print(
        "\n| true Σα | prior Σα | events | users | peak of Σ brute force | fit Σα: brute force"
        " 1/8x-4x | brute force 1/8x-8x | palm 1/8x-4x | palm 1/8x-8x | mean-log EM step Σα |"
        " CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(fit_rows))


def _fit(rows: FloatArray, cands: FloatArray, x0: float, n: int) -> float:
    """The library's fit (``Population._strength_fit``) on per-user rows; returns Σα."""
    pop = Population(n_min=20)
    for u, r in enumerate(rows):
        pop.observe(str(u), np.zeros(D), GRID.p, None, r)
    out = pop._strength_fit(np.log(cands), x0)
    assert out is not None
    return math.exp(out)


def corrected(m: PreferenceModel, cands: FloatArray, budget: int | None = None) -> FloatArray:
    """palm's evidence with the delta-method correction of the log's bias (+v/2, v = Σx² /
    (Σx)² − 1/n the estimated relative variance of Ẑ, from the same draws): tried, not kept."""
    ev = m.strength_evidence(cands, budget=budget)
    d = m.__dict__["_ev_draws"]
    ly = d.cols @ m._exps
    x = np.exp(ly - ly.max())[:, None] * d.ratio
    v = np.maximum((x * x).sum(axis=0) / x.sum(axis=0) ** 2 - 1.0 / x.shape[0], 0.0)
    out: FloatArray = ev + 0.5 * (v[:-1] - v[-1])
    return out


def _mean_log(alpha: FloatArray) -> FloatArray:
    from scipy.special import digamma

    out: FloatArray = digamma(alpha) - digamma(alpha.sum())
    return out


#: Fit rules of ``--dynamic``: candidate grid, the limit the evidence may raise the
#: concentration to ("em": the mean-log EM step's, as on main; "em|default": the larger of it
#: and the default's, this branch; "none": two-sided up to the grid), and the evidence
#: ("raw": palm's estimator, "corrected": with the delta-method correction, "brute": brute
#: force).
RULES: dict[str, tuple[FloatArray, str, str]] = {
    "main: 1/8x-4x, limit EM, raw": (ASYM, "em", "raw"),
    "(a) 1/8x-8x": (SYM, "em", "raw"),
    "(b) limit max(EM, default)": (ASYM, "em|default", "raw"),
    "(b') two-sided": (ASYM, "none", "raw"),
    "(c) corrected": (ASYM, "em", "corrected"),
    "(c') brute force": (ASYM, "em", "brute"),
    "(a)+(b): this branch": (SYM, "em|default", "raw"),
    "(a)+(b)+(c)": (SYM, "em|default", "corrected"),
    "(a)+(b), brute force": (SYM, "em|default", "brute"),
}


def dynamic(args: argparse.Namespace, rules: list[str]) -> None:
    """The simulator's palm loop (thumbs, K = 10, learned lapse, refits at t <= 10 and every 5
    events, everyone re-priored in place) under each fit rule."""
    T, n = max(args.events), args.users
    marks = [t for t in range(1, T + 1) if t <= 10 or t % 5 == 0 or t == T]
    show = [t for t in (1, 2, 5, 10, 20, 50, 100) if t <= T]
    print(
        f"\n| rule (true Σα {4 * args.alpha[0]:g}) | Σα after the refit at t = "
        + ", ".join(str(t) for t in show)
        + f" | mean Σα over refits | coverage % t = 1-10 / 11-{T} | CPU s |"
    )
    print("|---|---|---|---|---|")
    for name in rules:
        cands, limit, evidence = RULES[name]
        t0 = time.process_time()
        rng = np.random.default_rng(args.seed)
        R = lp_front_members(K, D, random_state=rng)
        ref = R.mean(axis=0)
        ws = rng.dirichlet(np.full(D, args.alpha[0]), size=n)
        alpha0 = np.ones(D)
        pop = Population(n_min=20)
        models = [
            PreferenceModel(
                prior_mean=alpha0 / D,
                prior_strength=4.0,
                noise=GRID,
                n_particles=1024,
                random_state=np.random.default_rng([args.seed, u]),
            ).fit([])
            for u in range(n)
        ]
        rs = [np.random.default_rng([args.seed, u, 1]) for u in range(n)]
        strengths: dict[int, float] = {}
        cover = np.zeros((n, T))
        for t in range(T + 1):
            if t in marks:
                rows = brute_force(models, cands, args.draws) if evidence == "brute" else None
                for u, m in enumerate(models):
                    if rows is not None:
                        se = rows[u]
                    elif evidence == "raw":
                        se = m.strength_evidence(cands, budget=256)
                    else:
                        se = corrected(m, cands, 256)
                    le = m.lapse_evidence(DEFAULT_LAPSES)
                    pop.observe(str(u), m.mean_log_weights(), m.noise_posterior(), le, se)
                prior = _prior(pop, alpha0, cands, limit)
                strengths[t] = float(prior.alpha.sum())
                for m in models:
                    m.reprior(prior.alpha, prior.noise.p)
                    if prior.noise.lapses[0] != m.noise_grid_.lapses[0]:
                        m.relapse(prior.noise.lapses[0])
            if t == T:
                break
            for u, (m, w) in enumerate(zip(models, ws)):
                s = m.summary(0.9)
                cover[u, t] = float(np.mean((w >= s.lower) & (w <= s.upper)))
                i = thompson_member(s.mean, s.sample(1, rs[u])[0], R, 0.2)
                y = 1 if rs[u].random() < _sigmoid(BETA * float(w @ (R[i] - ref))) else -1
                y = -y if rs[u].random() < FLIPS else y
                m.partial_fit([Observation.compare(R[i] - ref, y, ts=t)])
        print(
            f"| {name} | "
            + " ".join(f"{strengths[t]:.2f}" for t in show)
            + f" | {np.mean(list(strengths.values())):.2f}"
            + f" | {100 * cover[:, 1:11].mean():.1f} / {100 * cover[:, 11:].mean():.1f}"
            + f" | {time.process_time() - t0:.0f} |",
            flush=True,
        )


def _prior(pop: Population, alpha0: FloatArray, cands: FloatArray, limit: str) -> Any:
    """``Population.prior`` with the rule's candidates and limit (noise and lapse: the
    library's)."""
    prior = pop.prior(alpha0, GRID, DEFAULT_LAPSES)
    s, _, n = pop.statistics(alpha0, GRID)
    alpha = dirichlet_from_mean_log(s, alpha0) if n else alpha0
    log_s = pop._strength_fit(np.log(cands), math.log(4.0))
    top = {"em": alpha.sum(), "em|default": max(alpha.sum(), 4.0), "none": math.inf}[limit]
    if log_s is not None:
        alpha = alpha * min(math.exp(log_s), top) / alpha.sum()
    alpha = alpha * min(1.0, 16.0 / alpha.sum())
    return dataclasses.replace(prior, alpha=alpha)


def cost(args: argparse.Namespace) -> None:
    """Thread CPU of ``strength_evidence`` as the feedback path calls it (after each event,
    256 new draws at most, the library's candidates), per call: mean, p50, p99."""
    cands = strength_candidates(4.0)
    rng = np.random.default_rng(args.seed)
    R = lp_front_members(K, D, random_state=rng)
    ref = R.mean(axis=0)
    times = []
    for u, w in enumerate(rng.dirichlet(np.ones(D), size=args.users)):
        m = PreferenceModel(
            prior_mean=np.full(D, 1.0 / D),
            prior_strength=4.0,
            noise=GRID,
            n_particles=1024,
            random_state=np.random.default_rng([args.seed, u]),
        ).fit([])
        r = np.random.default_rng([args.seed, u, 1])
        for t in range(max(args.events)):
            i = int(r.integers(K))
            y = 1 if r.random() < _sigmoid(BETA * float(w @ (R[i] - ref))) else -1
            m.partial_fit([Observation.compare(R[i] - ref, y, ts=t)])
            t0 = time.thread_time()
            m.strength_evidence(cands, budget=256)
            times.append(time.thread_time() - t0)
    ms = 1e3 * np.asarray(times)
    print(
        f"{len(cands)} candidates, {args.users} users x {max(args.events)} thumbs: "
        f"mean {ms.mean():.3f} ms, p50 {np.percentile(ms, 50):.3f}, "
        f"p99 {np.percentile(ms, 99):.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--events", type=int, nargs="+", default=[5, 20, 50])
    ap.add_argument("--prior", type=float, nargs="+", default=[4.0, 2.9])
    ap.add_argument("--alpha", type=float, nargs="+", default=[1.0])
    ap.add_argument("--draws", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=None, help="palm's draws per call (Palm: 256)")
    ap.add_argument(
        "--renew",
        action="store_true",
        help="renew a user's draws once their observations doubled (Palm's background upkeep)",
    )
    ap.add_argument("--dynamic", action="store_true")
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    ap.add_argument("--cost", action="store_true", help="time strength_evidence per event")
    args = ap.parse_args()
    if args.cost:
        cost(args)
    elif args.dynamic:
        dynamic(args, args.rules)
    else:
        static(args)


if __name__ == "__main__":
    main()
