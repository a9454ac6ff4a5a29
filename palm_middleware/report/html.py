"""The population report as one self-contained HTML page (plots inlined as PNG, no CDN).

The page is drawn from the report's JSON data only, so it shows the same numbers and never more:
a withheld (null) number is drawn as a hatched "withheld" cell, never estimated.
matplotlib is imported here, on first use (the ``plot`` extra).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["render_html"]

_WITHHELD = "#d9d9d9"
_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:right}th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
.note{color:#666;font-size:.9rem}.ok{color:#227a22;font-weight:bold}
.bad{color:#b00020;font-weight:bold}figure{margin:.5rem 0}img{max-width:100%}
.withheld{color:#888;font-style:italic}
"""


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib ships with the plot extra
        raise ImportError(
            "the report's plots need matplotlib: pip install 'palm-middleware[plot]'"
        ) from exc
    # "tight" lays out once per save; "constrained" costs several extra draws per figure.
    return Figure(figsize=(width, height), dpi=90, layout="tight")


def _png(fig: Figure) -> str:
    """The figure as a data URI (no pyplot, so no global state: safe in a server thread)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str, name: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{html.escape(alt)}" data-plot="{html.escape(name)}">'
        "</figure>"
    )


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    if v is None:
        return '<span class="withheld">withheld</span>'
    if isinstance(v, bool) or isinstance(v, int):
        return _esc(v)
    if isinstance(v, float):
        return _esc(fmt.format(v))
    return _esc(v)


def _pct(v: Any) -> str:
    return _num(None if v is None else f"{100 * float(v):.1f}%")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _bars(ax: Axes, xs: Sequence[float], values: Sequence[float | None], **kw: Any) -> None:
    """Bars with withheld values drawn as hatched grey stubs."""
    shown = [v if v is not None else 0.0 for v in values]
    ax.bar(xs, shown, **kw)
    top = max([v for v in values if v is not None] or [1.0])
    for x, v in zip(xs, values):
        if v is None:
            ax.bar(
                [x],
                [top * 0.08],
                width=kw.get("width", 0.8),
                color=_WITHHELD,
                hatch="//",
                edgecolor="#999",
            )


# -- plots ------------------------------------------------------------------------------------


def _simplex_plot(simplex: dict[str, Any], traits: Sequence[str]) -> str:
    from matplotlib.patches import Polygon

    fig = _figure(6.0, 5.2)
    ax = fig.add_subplot()
    s3 = math.sqrt(3) / 2

    def xy(a: float, b: float) -> tuple[float, float]:
        c = 1.0 - a - b
        return b + 0.5 * c, s3 * c  # corner trait 0 at (0, 0), 1 at (1, 0), 2 at (0.5, s3)

    counts = [c["users"] for c in simplex["cells"] if c["users"] is not None]
    top = max(counts or [1]) or 1
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for cell in simplex["cells"]:
        pts = [xy(a, b) for a, b in cell["corners"]]
        n = cell["users"]
        if n is None:
            patch = Polygon(pts, facecolor=_WITHHELD, hatch="//", edgecolor="#aaa", lw=0.5)
        elif n == 0:
            patch = Polygon(pts, facecolor="white", edgecolor="#ddd", lw=0.5)
        else:
            patch = Polygon(pts, facecolor=cmap(0.15 + 0.85 * n / top), edgecolor="white", lw=0.5)
        ax.add_patch(patch)
    ax.plot([0, 1, 0.5, 0], [0, 0, s3, 0], color="#333", lw=1)
    for (x, y), name, ha in zip(((0, 0), (1, 0), (0.5, s3)), traits, ("right", "left", "center")):
        ax.annotate(
            name, (x, y), xytext=(0, -14 if y == 0 else 6), textcoords="offset points", ha=ha
        )
    ax.set_xlim(-0.1, 1.1)
    ax.set_ylim(-0.1, s3 + 0.1)
    ax.set_aspect("equal")
    ax.axis("off")
    sm = _scalar_mappable(cmap, top)
    fig.colorbar(sm, ax=ax, shrink=0.6, label="users per cell (grey: withheld)")
    ax.set_title("Inferred weights of the users on the simplex")
    return _png(fig)


def _scalar_mappable(cmap: Any, top: float) -> Any:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    return ScalarMappable(norm=Normalize(0, top), cmap=cmap)


def _marginals_plot(marginals: dict[str, Any]) -> str:
    names = list(marginals)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(3.0 * cols, 2.4 * rows)
    for i, t in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        h = marginals[t]
        edges = h["edges"]
        centers = [(edges[j] + edges[j + 1]) / 2 for j in range(len(edges) - 1)]
        _bars(ax, centers, h["users"], width=(edges[1] - edges[0]) * 0.9, color=_COLORS[0])
        ax.set_title(t)
        ax.set_xlim(0, 1)
        ax.set_xlabel("weight")
        if i % cols == 0:
            ax.set_ylabel("users")
    fig.suptitle("Inferred weight of each trait (marginals; grey: withheld)")
    return _png(fig)


def _members_plot(members: list[dict[str, Any]], what_if: dict[str, Any] | None) -> str:
    fig = _figure(7.0, 3.4)
    ax = fig.add_subplot()
    xs = list(range(len(members)))
    series = [("users", "users_share"), ("requests", "requests_share")]
    n_series = len(series) + (1 if what_if else 0)
    w = 0.8 / n_series
    for s, (label, key) in enumerate(series):
        _bars(
            ax,
            [x + (s - (n_series - 1) / 2) * w for x in xs],
            [m[key] for m in members],
            width=w,
            color=_COLORS[s],
            label=f"share of {label}",
        )
    if what_if:
        total = sum(m["users"] or 0 for m in what_if["members"]) or 1
        vals = [None if m["users"] is None else m["users"] / total for m in what_if["members"]]
        _bars(
            ax,
            [x + (n_series - 1) / 2 * w for x in xs],
            vals,
            width=w,
            color=_COLORS[2],
            label="share of users (candidate)",
        )
    ax.set_xticks(xs, [m["member"] for m in members])
    ax.set_ylabel("share")
    ax.legend()
    ax.set_title("Each member's share of users and of requests")
    return _png(fig)


def _welfare_plot(welfare: dict[str, Any], candidate: dict[str, Any] | None) -> str:
    fig = _figure(6.0, 3.2)
    ax = fig.add_subplot()
    labels = [f"single best\n({welfare['single_member']})", "portfolio\n(within bounds)"]
    values = [welfare["single"], welfare["portfolio"]]
    colors = [_COLORS[1], _COLORS[0]]
    if candidate is not None and candidate.get("portfolio") is not None:
        labels.append("portfolio\n(candidate policy)")
        values.append(candidate["portfolio"])
        colors.append(_COLORS[2])
    labels.append("oracle\n(no bounds)")
    values.append(welfare["oracle"])
    colors.append(_COLORS[4])
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    lo = min(values)
    ax.set_xlim(max(0.0, lo - (max(values) - lo) * 1.5 - 0.02), max(values) * 1.01 + 1e-9)
    for y, v in enumerate(values[::-1]):
        ax.annotate(f"{v:.4f}", (v, y), xytext=(3, 0), textcoords="offset points", va="center")
    ax.set_xlabel("mean scalarized reward w·r over the users")
    ax.set_title("Welfare: one model for everybody vs the portfolio")
    return _png(fig)


def _cost_plot(cost: dict[str, Any], candidate: dict[str, Any] | None) -> str:
    rules = [r["rule"] for r in cost["rules"]]
    if candidate is not None:
        rules += [r["rule"] for r in candidate["rules"] if r["rule"] not in rules]
    fig = _figure(7.0, 0.9 + 0.45 * max(len(rules), 1))
    ax = fig.add_subplot()
    now = {r["rule"]: r["reward_lost_per_user"] for r in cost["rules"]}
    ys = list(range(len(rules)))
    h = 0.4 if candidate is not None else 0.7
    vals = [now.get(r, 0.0) for r in rules]
    ax.barh(
        [y - (h / 2 if candidate else 0) for y in ys],
        [v or 0.0 for v in vals],
        height=h,
        color=_COLORS[3],
        label="policy in force",
    )
    if candidate is not None:
        new = {r["rule"]: r["reward_lost_per_user"] for r in candidate["rules"]}
        ax.barh(
            [y + h / 2 for y in ys],
            [new.get(r) or 0.0 for r in rules],
            height=h,
            color=_COLORS[2],
            label="candidate policy",
        )
        ax.legend()
    for y, v in zip(ys, vals):
        if v is None:
            ax.annotate(
                "withheld",
                (0, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                color="#888",
            )
    if rules:
        ax.set_yticks(ys, rules)
    else:  # (one tick for the note: a label needs a tick to sit on)
        ax.set_yticks([0], ["(no rule binds)"])
    ax.invert_yaxis()
    ax.set_xlabel("reward lost per user (population mean)")
    ax.set_title("Cost of the bounds, per rule")
    return _png(fig)


def _evidence_plot(evidence: dict[str, Any]) -> str:
    fig = _figure(6.0, 2.8)
    ax = fig.add_subplot()
    edges = evidence["edges"]
    labels = ["at prior (0)"]
    for j in range(1, len(edges) - 1):
        lo, hi = edges[j], edges[j + 1]
        labels.append(f"{lo:g}–{hi:g}" if hi is not None else f"> {lo:g}")
    labels[1] = f"(0, {edges[2]:g}]"
    _bars(ax, list(range(len(labels))), evidence["users"], color=_COLORS[0])
    ax.set_xticks(list(range(len(labels))), labels)
    ax.set_xlabel("evidence (effective number of feedback events)")
    ax.set_ylabel("users")
    ax.set_title("Evidence behind each user's weights")
    return _png(fig)


def _activity_plot(activity: dict[str, Any]) -> str | None:
    topics = [t for t in activity["topics"] if t["shown"]][:8]
    if not topics or activity["buckets"] < 1:
        return None
    fig = _figure(9.0, 2.2 * len(topics) + 0.6)
    start, size = activity["bucket_start"], activity["bucket_seconds"]
    xs = [
        datetime.fromtimestamp(start + b * size, tz=timezone.utc)
        for b in range(activity["buckets"])
    ]
    for i, t in enumerate(topics):
        ax = fig.add_subplot(len(topics), 1, i + 1)
        for s, (key, label) in enumerate(
            (("requests", "requests"), ("rules_fired", "rules fired"), ("blocked", "guard blocks"))
        ):
            ys = [float("nan") if v is None else v for v in t[key]]
            ax.plot(cast(Any, xs), ys, marker="o", ms=3, color=_COLORS[s], label=label)
        ax.set_title(f"topic: {t['topic']}", fontsize=10, loc="left")
        ax.set_ylabel("requests")
        if i == 0:
            ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Rules fired and guard blocks per topic ({size // 60} min buckets, UTC)")
    return _png(fig)


# -- the page ---------------------------------------------------------------------------------


def render_html(report: dict[str, Any]) -> str:
    """The page for ``report`` (the output of :func:`compute_report`), fully self-contained."""
    dep, pop, priv = report["deployment"], report["population"], report["privacy"]
    what_if = report.get("what_if")
    cand_pop = what_if.get("population") if what_if else None
    when = datetime.fromtimestamp(report["generated_at"], tz=timezone.utc)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<link rel='icon' href='data:,'>",  # no favicon request: the page fetches nothing
        f"<title>PALM population report: {_esc(dep['portfolio'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Population report: {_esc(dep['portfolio'])}</h1>",
        f"<p>Policy <b>{_esc(dep['policy']['name'])}</b> (version "
        f"<code>{_esc(dep['policy']['version'])}</code>); members "
        f"{_esc(', '.join(dep['members']))}; traits {_esc(', '.join(dep['traits']))}. "
        f"Generated {when:%Y-%m-%d %H:%M} UTC.</p>",
        f"<p class='note'>Aggregates only, read from posteriors and decision records (never "
        f"message text). Any number standing for fewer than <b>{priv['min_group_size']}</b> "
        "users is withheld. Population views evaluate the unconditional rules; conditional "
        "rules appear in the request views.</p>",
        "<h2>Population</h2>",
        _table(
            ["users", "still at the prior", "opted out", "unreadable profiles"],
            [
                [
                    _num(pop["users"]),
                    _num(pop["at_prior"]),
                    _num(pop["opted_out"]),
                    _num(pop["unreadable_profiles"]),
                ]
            ],
        ),
    ]
    if not pop["shown"]:
        parts.append(
            f"<p class='bad'>{pop['users']} users: below the minimum group size of "
            f"{priv['min_group_size']}, no population view is shown.</p>"
        )
    else:
        w = report["weights"]
        parts.append("<h2>Inferred weights</h2>")
        parts.append(
            _table(["trait", "population mean"], [[_esc(t), _num(v)] for t, v in w["mean"].items()])
        )
        if w["simplex"] is not None:
            parts.append(
                _img(_simplex_plot(w["simplex"], dep["traits"]), "weights simplex", "simplex")
            )
        parts.append(_img(_marginals_plot(w["marginals"]), "weight marginals", "marginals"))
        welfare = report["welfare"]
        if welfare.get("users"):
            parts.append("<h2>Welfare: what personalization buys</h2>")
            cand_w = cand_pop["welfare"] if cand_pop else None
            parts.append(_img(_welfare_plot(welfare, cand_w), "welfare", "welfare"))
            rows = [
                [
                    "single best member for everybody (" + _esc(welfare["single_member"]) + ")",
                    _num(welfare["single"]),
                ],
                ["portfolio, within the bounds", _num(welfare["portfolio"])],
                ["oracle: each user's best member, no bounds", _num(welfare["oracle"])],
                ["gain over the single model", _num(welfare["gain_over_single"])],
                ["share of the oracle gap closed", _pct(welfare["gap_closed"])],
            ]
            if cand_w and cand_w.get("users"):
                rows.append(["portfolio under the candidate policy", _num(cand_w["portfolio"])])
                rows.append(["gap closed under the candidate", _pct(cand_w["gap_closed"])])
            parts.append(_table(["mean scalarized reward", "value"], rows))
        cost = report["bounds_cost"]
        cand_c = cand_pop["bounds_cost"] if cand_pop else None
        parts.append("<h2>Cost of the bounds</h2>")
        parts.append(_img(_cost_plot(cost, cand_c), "cost of the bounds", "bounds_cost"))
        parts.append(
            _table(
                [
                    "rule",
                    "users affected",
                    "users losing reward",
                    "reward lost per user",
                    "mean loss of those affected",
                ],
                [
                    [
                        _esc(r["rule"]),
                        _num(r["users_affected"]),
                        _num(r["users_losing"]),
                        _num(r["reward_lost_per_user"]),
                        _num(r["mean_loss_affected"]),
                    ]
                    for r in cost["rules"]
                ],
            )
        )
        parts.append(
            f"<p>Total: {_num(cost['reward_lost_per_user'])} reward per user; "
            f"{_num(cost['users_losing'])} users lose some. <span class='note'>"
            f"{_esc(cost['note'])}.</span></p>"
        )
        ev = report["evidence"]
        parts.append("<h2>Evidence and uncertainty</h2>")
        parts.append(_img(_evidence_plot(ev), "evidence", "evidence"))
        parts.append(
            f"<p>{_num(pop['at_prior'])} users are still at the prior; median evidence "
            f"{_num(ev['median'])}, mean {_num(ev['mean'])}.</p>"
        )
    parts.append("<h2>Members</h2>")
    parts.append(_img(_members_plot(report["members"], cand_pop), "member shares", "members"))
    parts.append(
        _table(
            ["member", "users", "share of users", "requests", "share of requests"],
            [
                [
                    _esc(m["member"]),
                    _num(m["users"]),
                    _pct(m["users_share"]),
                    _num(m["requests"]),
                    _pct(m["requests_share"]),
                ]
                for m in report["members"]
            ],
        )
    )
    act = report["activity"]
    parts.append("<h2>Rules fired and guard blocks per topic</h2>")
    parts.append(
        f"<p>{act['requests']} decisions, {act['blocked']} guard blocks, {act['refused']} "
        "refused (topic labelling failed).</p>"
    )
    plot = _activity_plot(act)
    if plot is not None:
        parts.append(_img(plot, "activity per topic", "activity"))
    if act["rules_by_topic"]:
        parts.append(
            _table(
                ["rule", "topic", "requests"],
                [
                    [_esc(r["rule"]), _esc(r["topic"]), _num(r["requests"])]
                    for r in act["rules_by_topic"]
                ],
            )
        )
    if act["rules_by_topic_withheld"]:
        parts.append(
            f"<p class='note'>{act['rules_by_topic_withheld']} rule/topic pairs withheld "
            "(too few users).</p>"
        )
    if what_if:
        parts.append(_what_if_section(what_if))
    parts.append(_audit_section(report["audit"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _what_if_section(what_if: dict[str, Any]) -> str:
    p = what_if["policy"]
    out = [
        "<h2>What if: candidate policy</h2>",
        f"<p>Candidate <b>{_esc(p['name'])}</b> (version <code>{_esc(p['version'])}</code>, "
        f"{_esc(p['source'])}), on the recorded population and requests.</p>",
    ]
    pop = what_if.get("population")
    rows = []
    if pop is not None:
        rows += [
            ["users whose member changes", _num(pop["users_changing_member"])],
            ["users blocked by unconditional rules", _num(pop["users_blocked"])],
        ]
        if pop["welfare"].get("users"):
            rows.append(["welfare (portfolio)", _num(pop["welfare"]["portfolio"])])
            rows.append(["share of the oracle gap closed", _pct(pop["welfare"]["gap_closed"])])
        rows.append(
            ["cost of the bounds per user", _num(pop["bounds_cost"]["reward_lost_per_user"])]
        )
    req = what_if["requests"]
    rows += [
        ["recorded requests replayed", _num(req["replayed"])],
        ["requests served another member", _num(req["member_changes"])],
        ["requests newly blocked", _num(req["newly_blocked"])],
        ["blocked requests now allowed", _num(req["no_longer_blocked"])],
    ]
    out.append(_table(["under the candidate", "value"], rows))
    if req["rules_fired"]:
        out.append(
            _table(
                ["rule (candidate)", "requests it would fire on"],
                [[_esc(r), _num(n)] for r, n in req["rules_fired"].items()],
            )
        )
    out.append(f"<p class='note'>{_esc(req['note'])}.</p>")
    return "\n".join(out)


def _audit_section(audit: dict[str, Any]) -> str:
    if "error" in audit:
        return (
            f"<h2>Audit chain</h2><p class='bad'>could not be verified: {_esc(audit['error'])}</p>"
        )
    status = "<span class='ok'>intact</span>" if audit["ok"] else "<span class='bad'>BROKEN</span>"
    out = [
        "<h2>Audit chain</h2>",
        f"<p>Status: {status}. {audit['checked']} records verified, {audit['erased']} erased by "
        f"a forget (tombstones), {audit['unchained']} written before the chain; head "
        f"<code>{_esc(audit['head'])}</code> (anchor it outside the database).</p>",
    ]
    if audit["problems"]:
        items = "".join(f"<li>{_esc(p)}</li>" for p in audit["first_problems"])
        out.append(f"<p class='bad'>{audit['problems']} problem(s):</p><ul>{items}</ul>")
    return "\n".join(out)
