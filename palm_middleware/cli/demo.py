"""``palm demo``: the main job — scripted users personalizing real members through the proxy."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import add_served_options, load_served

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command."""
    p = sub.add_parser(
        "demo",
        help="run scripted users through the LiteLLM proxy with PALM (the main job)",
        description="Prepare the default portfolio's base models (cached after the first run: "
        "the fp32 export, then the GenAI model builder's fused graph with the GGUF's own "
        "4-bit blocks (int4-gguf), built in the builder's own "
        "~1.7 GB environment; --portfolio smollm2/portfolio-fp32.yaml needs no builder), "
        "start the LiteLLM proxy with PALM on 127.0.0.1, and let scripted users with hidden "
        "weights ask, compare two real replies and give feedback until the proxy serves each "
        "of them the member their weights call for, within the policy's bounds. One user also "
        "asks a risky question the policy's guard must stop. Writes session.json and "
        "summary.md to --out.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out/demo"),
        help="output folder (deployment, SQLite store, proxy log, results; default: %(default)s)",
    )
    add_served_options(p)
    p.add_argument(
        "--prompts",
        type=Path,
        default=None,
        help="prompt set (default: the bundled palm-prompts-v1)",
    )
    p.add_argument(
        "--scorers",
        type=Path,
        default=None,
        help="trait scorers the users judge with (default: bundled scorers.yaml)",
    )
    p.add_argument(
        "--users",
        type=Path,
        default=None,
        help="scripted users YAML (users: [{name, hidden: {trait: w}, about}]); "
        "default: one user leaning on each trait and one balanced",
    )
    p.add_argument("--rounds", type=int, default=12, help="A/B rounds per user (default 12)")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=96,
        help="cap per reply; the default portfolio was measured with 96",
    )
    p.add_argument(
        "--pair-cost",
        type=float,
        default=None,
        help="the most an A/B pair's second member may cost a user, as a share of the best "
        "value under their weights (default: the proxy's, 0.4)",
    )
    p.add_argument("--seed", type=int, default=0, help="order of the prompts (default 0)")
    p.add_argument("--port", type=int, default=None, help="proxy port (default: a free one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare, serve, play the session, print and write the summary."""
    import json
    import random
    import shutil
    import time

    from ..data import bundled
    from ..demo.deployment import write_deployment
    from ..demo.proxy import ProxyProcess
    from ..demo.session import Session
    from ..demo.users import default_users, load_users
    from ..exceptions import InvalidParameterError
    from ..offline.evaluation.prompts import load_prompt_set
    from ..offline.scoring.calibration import load_scorers

    if args.rounds < 1:
        raise InvalidParameterError(f"--rounds must be >= 1; got {args.rounds}")
    prompts = load_prompt_set(args.prompts or bundled("prompts.yaml")).prompts
    safe = [p for p in prompts if not p.risky]
    random.Random(args.seed).shuffle(safe)  # every category early on, the same order each run
    risky = next((p for p in prompts if p.risky), None)
    if not safe:
        raise InvalidParameterError("the prompt set has no non-risky prompts")

    from ..offline.engines.base_model import default_base_dir

    t0 = time.perf_counter()
    first_run = not (default_base_dir() / "model_card.json").exists()
    from ..demo.prepare import DEFAULT_GENAI

    genai_first = not (default_base_dir().with_name(DEFAULT_GENAI) / "model_card.json").exists()
    steps = []
    if first_run:
        steps.append(
            f"exporting SmolLM2-135M-Instruct to ONNX once (about 1.5 min on an idle 2-core "
            f"CPU{_at_load(90.0)})"
        )
    if genai_first and _serves_genai(args):
        steps.append(
            "building its 4-bit graph (the GGUF's own blocks in the ONNX Runtime GenAI model "
            "builder's fused graph) once (the builder's own environment, ~1.7 GB, plus 1-3 min)"
        )
    print(
        "[1/3] preparing the portfolio's base models: "
        + ("first run, " + "; then ".join(steps) + "; cached afterwards" if steps else "cached")
    )
    served = load_served(args, progress=not args.no_progress)
    portfolio, policy = served.portfolio, served.policy
    portfolio_path, policy_path = served.portfolio_path, served.policy_path
    scorers = load_scorers(args.scorers or bundled("scorers.yaml"), traits=portfolio.space.names)
    prepared = time.perf_counter() - t0
    print(f"      portfolio {portfolio.name!r}: {', '.join(portfolio.ids)}")
    shown: set[str] = set()
    for name, folder in served.bases.items():
        print(f"      base {name}: {folder}")
        card = folder / "model_card.json"
        if first_run and card.is_file():
            summary = json.loads(card.read_text(encoding="utf-8")).get("base", {})
            line = summary.get("log_summary")
            if line and line not in shown:  # a derived base copies its parent's card
                shown.add(line)
                print(f"      {line}")
    print(f"      ready in {prepared:.1f} s")

    out: Path = args.out
    if (out / "palm.db").exists():  # a fresh session each run: nobody starts with a history
        for f in out.glob("palm.db*"):
            f.unlink()
    users = (
        load_users(args.users, portfolio.space.names)
        if args.users
        else default_users(portfolio.space.names)
    )
    dep = write_deployment(
        out,
        portfolio=portfolio_path,
        policy=policy_path,
        bases=served.bases,
        users=[u.name for u in users],
        pair_cost=args.pair_cost,
    )
    print(f"[2/3] starting the LiteLLM proxy with PALM (config {dep.config})")
    t1 = time.perf_counter()
    with ProxyProcess(dep.config, dep.palm_config, port=args.port, log=out / "proxy.log") as proxy:
        started = time.perf_counter() - t1
        print(f"      serving on {proxy.url} ({started:.1f} s to start); log {proxy.log}")
        print(
            f"[3/3] {len(users)} users with hidden weights over "
            f"{', '.join(portfolio.space.names)}; {args.rounds} rounds each: ask, compare "
            f"two replies, send the choice (about {_estimate(len(users) * args.rounds)} on an "
            f"idle 2-core CPU{_at_load(len(users) * args.rounds * 2 * 1.3)})"
        )
        for u in users:
            print(
                f"      {u.name:<6} {u.about:<26} hidden "
                + " ".join(f"{t}={w:.2f}" for t, w in u.hidden.items())
            )
        print()
        t2 = time.perf_counter()
        result = Session(
            proxy.url,
            dep.keys,
            users,
            portfolio,
            policy,
            scorers,
            safe,
            risky=risky,
            rounds=args.rounds,
            max_tokens=args.max_tokens,
        ).run()
        played = time.perf_counter() - t2
    timing = {
        "prepare_s": round(prepared, 1),
        "proxy_start_s": round(started, 1),
        "session_s": round(played, 1),
    }
    report = {
        **result.to_dict(),
        "timing": timing,
        "portfolio": str(portfolio_path),
        "policy": str(policy_path),
    }
    (out / "session.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lat = report["latency_s"]
    lines = [
        "# palm demo: summary",
        "",
        result.table(),
        "",
        "hidden: the user's true weights (never sent); inferred: posterior mean from their A/B "
        "choices; applied: after the bounds policy; best within bounds: the member the policy "
        "allows their hidden weights to reach.",
        "",
    ]
    for s in result.users:
        lines.append(f"- {s.name} ends on **{s.final_member}**: {s.final_reply[:160]!r}")
    if result.guard is not None:
        g = result.guard
        lines += [
            "",
            f"Guard: {g['user']} asked {g['prompt']!r} -> "
            + (
                f"blocked by `{g['blocked_by']}`: {g['message']}"
                if g["blocked_by"]
                else f"NOT blocked (served by {g['member']})"
            ),
        ]
    if lat:
        lines += [
            "",
            f"Steady-state replies: n={lat['n']}, p50 {lat['p50']:.2f} s, "
            f"p95 {lat['p95']:.2f} s, {lat['tokens_per_s']:.1f} completion tokens/s. "
            f"Prepare {timing['prepare_s']} s, proxy start {timing['proxy_start_s']} s, "
            f"session {timing['session_s']} s.",
        ]
    summary = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(summary, encoding="utf-8")
    from ..demo.report import write_demo_report  # the operator's view of this population

    print(f"population report: {write_demo_report(dep.palm_config, out)}")
    width = shutil.get_terminal_size((120, 20)).columns
    print("\n" + "=" * min(width, 100))
    print(summary)
    ok = sum(u.converged for u in result.users)
    print(
        f"{ok} of {len(result.users)} users end on the best member within the bounds; "
        f"results in {out / 'session.json'} and {out / 'summary.md'}"
    )
    return 0


def _serves_genai(args: argparse.Namespace) -> bool:
    """Whether the served portfolio runs on a base the GenAI model builder prepares."""
    from ..data import bundled
    from ..demo.prepare import GENAI_BASES, bases_of
    from ..portfolio.manifest import load_portfolio
    from ._common import parse_bases

    given = parse_bases(args.base)
    portfolio = load_portfolio(args.portfolio or bundled("smollm2/portfolio.yaml"))
    return any(b in GENAI_BASES and b not in given for b in bases_of(portfolio))


def _estimate(rounds: int) -> str:
    """Rough session length: two replies per round at ~1.3 s each (2-core CPU, BENCHMARKS.md)."""
    return _duration(rounds * 2 * 1.3)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _at_load(idle_seconds: float) -> str:
    """``", ~9 min at this machine's load (6.1x)"`` when runnable work exceeds the cores.

    A busy machine made the first run 5-10 times slower than the idle estimate (BENCHMARKS.md);
    the 1-minute load average per core is the factor, so the estimate says so up front.
    """
    try:
        factor = os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):  # no load average on this platform
        return ""
    if factor < 1.5:
        return ""
    return f", ~{_duration(idle_seconds * factor)} at this machine's current load ({factor:.1f}x)"
