"""Loading candidate pools (pre-measured policies) from CSV or YAML, with located errors.

CSV: a header with an ``id`` column, one column per trait (rewards in [0, 1]), optional
``<trait>_se`` columns (standard errors) and optional ``w_<trait>`` columns (the weight the
policy was trained for). Every other column is a trait unless ``traits`` selects some.

YAML: a portfolio manifest (see :mod:`palm_middleware.portfolio.manifest`), or a list of
``{id, reward: {trait: value}, stderr: {...}, weight: {...}}`` items, optionally wrapped as
``{traits: [...], candidates: [...]}``.

Every problem becomes a :class:`ManifestError` naming file, line (the CSV row's line) and field.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._yaml import LocatedYAML, load_yaml_file
from ...exceptions import ConfigIssue, InvalidWeightsError, ManifestError
from ...portfolio.manifest import _from_doc
from ...traits import TraitSpace
from ...types import FloatArray
from .oracle import Candidate

__all__ = ["CandidateSet", "align_pool", "load_candidates"]


@dataclass(frozen=True)
class CandidateSet:
    """A validated pool of candidates over a trait space.

    Attributes:
        space: The traits, in column order.
        candidates: The candidates, in file order.
        source: The file they came from.
    """

    space: TraitSpace
    candidates: tuple[Candidate, ...]
    source: str

    def __len__(self) -> int:
        return len(self.candidates)

    @property
    def ids(self) -> tuple[str, ...]:
        """Candidate ids in file order."""
        return tuple(c.id for c in self.candidates)

    @property
    def rewards(self) -> FloatArray:
        """Rewards, shape (n_candidates, d)."""
        return np.vstack([c.reward for c in self.candidates])

    @property
    def stderrs(self) -> FloatArray:
        """Standard errors, shape (n_candidates, d); 0 where unknown."""
        return np.vstack(
            [np.zeros(self.space.dim) if c.stderr is None else c.stderr for c in self.candidates]
        )

    @property
    def has_stderr(self) -> bool:
        """Whether any candidate carries a standard error."""
        return any(c.stderr is not None for c in self.candidates)


def load_candidates(path: str | Path, traits: Sequence[str] | None = None) -> CandidateSet:
    """Load a candidate pool from a ``.csv`` or ``.yaml``/``.yml`` file.

    Args:
        path: The file.
        traits: Trait columns to use, in this order; defaults to all trait columns of the file.

    Returns:
        The validated pool (at least one candidate).

    Raises:
        ManifestError: On any problem, naming file, line and field.
    """
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return _load_csv(p, traits)
    if p.suffix.lower() in (".yaml", ".yml"):
        return _load_yaml(p, traits)
    raise ManifestError(
        ConfigIssue(f"unknown candidates format {p.suffix!r}; use .csv, .yaml or .yml", file=str(p))
    )


def _space(names: Sequence[str], file: str, line: int | None, field: str) -> TraitSpace:
    try:
        return TraitSpace(names)
    except InvalidWeightsError as exc:
        raise ManifestError(ConfigIssue(str(exc), file=file, line=line, field=field)) from None


def _load_csv(p: Path, traits: Sequence[str] | None) -> CandidateSet:
    f = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(ConfigIssue("file not found", file=f)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(ConfigIssue(f"cannot read file: {exc}", file=f)) from exc
    reader = csv.reader(text.splitlines())
    header = [h.strip() for h in next(reader, [])]
    if not header or header == [""]:
        raise ManifestError(ConfigIssue("the file is empty; expected a CSV header", file=f, line=1))
    if "id" not in header:
        raise ManifestError(
            ConfigIssue(
                f"missing the 'id' column; the header is {header}", file=f, line=1, field="id"
            )
        )
    se_cols = {h[:-3]: h for h in header if h.endswith("_se")}
    w_cols = {h[2:]: h for h in header if h.startswith("w_")}
    trait_cols = [
        h for h in header if h != "id" and h not in se_cols.values() and h not in w_cols.values()
    ]
    if traits is not None:
        missing = [t for t in traits if t not in trait_cols]
        if missing:
            raise ManifestError(
                ConfigIssue(
                    f"traits {missing} are not columns of the file; trait columns are {trait_cols}",
                    file=f,
                    line=1,
                    field=",".join(missing),
                )
            )
        trait_cols = list(traits)
    space = _space(trait_cols, f, 1, "header")
    issues: list[ConfigIssue] = []
    if traits is None:  # with an explicit selection, columns of unselected traits are ignored
        for name, col in {**se_cols, **w_cols}.items():
            if name not in space:
                issues.append(
                    ConfigIssue(
                        f"column {col!r} refers to unknown trait {name!r}; traits are "
                        f"{list(space.names)}",
                        file=f,
                        line=1,
                        field=col,
                    )
                )
    if issues:
        raise ManifestError(issues)
    pos = {h: i for i, h in enumerate(header)}
    cands: list[Candidate] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            issues.append(
                ConfigIssue(
                    f"row has {len(row)} fields; the header has {len(header)}", file=f, line=line
                )
            )
            continue
        cid = row[pos["id"]].strip()
        if not cid:
            issues.append(ConfigIssue("empty id", file=f, line=line, field="id"))
            continue
        if cid in seen:
            issues.append(
                ConfigIssue(
                    f"duplicate id {cid!r} (first on line {seen[cid]})",
                    file=f,
                    line=line,
                    field="id",
                )
            )
            continue
        seen[cid] = line

        def num(
            col: str, lo: float, hi: float, line: int = line, row: list[str] = row
        ) -> float | None:
            raw = row[pos[col]].strip()
            try:
                v = float(raw)
            except ValueError:
                issues.append(
                    ConfigIssue(
                        f"{_what(col)} must be a number in [{lo:g}, {hi:g}]; got {raw!r}",
                        file=f,
                        line=line,
                        field=col,
                    )
                )
                return None
            if not math.isfinite(v) or not lo <= v <= hi:
                issues.append(
                    ConfigIssue(
                        f"{_what(col)} must be in [{lo:g}, {hi:g}]; got {raw}",
                        file=f,
                        line=line,
                        field=col,
                    )
                )
                return None
            return v

        reward = [num(t, 0.0, 1.0) for t in space.names]
        se = [num(se_cols[t], 0.0, math.inf) if t in se_cols else 0.0 for t in space.names]
        wt = [num(w_cols[t], 0.0, 1.0) if t in w_cols else None for t in space.names]
        if any(v is None for v in reward) or any(v is None for v in se):
            continue
        weight = None
        if all(v is not None for v in wt):
            wa = np.array(wt, dtype=np.float64)
            weight = wa / wa.sum() if wa.sum() > 0 else None
        cands.append(
            Candidate(
                id=cid,
                reward=np.array(reward, dtype=np.float64),
                stderr=np.array(se, dtype=np.float64) if se_cols else None,
                weight=weight,
            )
        )
    if issues:
        raise ManifestError(issues)
    if not cands:
        raise ManifestError(
            ConfigIssue(
                "the candidate pool is empty: the file has a header but no rows", file=f, line=1
            )
        )
    return CandidateSet(space=space, candidates=tuple(cands), source=f)


def _what(col: str) -> str:
    if col.endswith("_se"):
        return f"standard error of {col[:-3]!r}"
    if col.startswith("w_"):
        return f"training weight of {col[2:]!r}"
    return f"reward {col!r}"


def _load_yaml(p: Path, traits: Sequence[str] | None) -> CandidateSet:
    doc = load_yaml_file(p, ManifestError)
    data = doc.data
    if isinstance(data, dict) and "members" in data:
        port = _from_doc(doc)
        cands = tuple(
            Candidate(id=m.id, reward=m.reward, stderr=m.stderr if m.stderr.any() else None)
            for m in port.members
        )
        return _select(CandidateSet(port.space, cands, doc.filename), traits, doc)
    prefix: tuple[str | int, ...] = ()
    names: list[str] | None = None
    if isinstance(data, dict) and "candidates" in data:
        extra = sorted(set(map(str, data)) - {"traits", "candidates"})
        if extra:
            raise ManifestError(
                doc.issue(
                    (extra[0],), f"unknown key {extra[0]!r}; expected 'traits' and 'candidates'"
                )
            )
        if "traits" in data:
            if not isinstance(data["traits"], list):
                raise ManifestError(doc.issue(("traits",), "traits must be a list of names"))
            names = [str(t) for t in data["traits"]]
        prefix = ("candidates",)
        data = data["candidates"]
    if not isinstance(data, list):
        raise ManifestError(
            doc.issue(
                prefix,
                "expected a manifest (with 'members'), a list of candidates, or "
                "{traits, candidates}",
            )
        )
    if not data:
        raise ManifestError(doc.issue(prefix, "the candidate pool is empty"))
    if names is None:
        first = data[0].get("reward") if isinstance(data[0], dict) else None
        if not isinstance(first, dict) or not first:
            raise ManifestError(
                doc.issue((*prefix, 0, "reward"), "reward must be a mapping {trait: value}")
            )
        names = [str(k) for k in first]
    line, _ = doc.locate(("traits",) if "traits" in (doc.data or {}) else (*prefix, 0))
    space = _space(names, doc.filename, line, "traits")
    issues: list[ConfigIssue] = []
    cands_l: list[Candidate] = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        here = (*prefix, i)
        if not isinstance(item, dict):
            issues.append(doc.issue(here, "each candidate must be a mapping with id and reward"))
            continue
        unknown = sorted(set(map(str, item)) - {"id", "reward", "stderr", "weight"})
        if unknown:
            issues.append(doc.issue((*here, unknown[0]), f"unknown key {unknown[0]!r}"))
        cid = item.get("id")
        if not isinstance(cid, (str, int)) or str(cid) == "":
            issues.append(doc.issue((*here, "id"), "missing or empty id"))
            continue
        cid = str(cid)
        if cid in seen:
            issues.append(doc.issue((*here, "id"), f"duplicate id {cid!r}"))
        seen.add(cid)
        reward = _vector(
            doc, (*here, "reward"), item.get("reward"), space, 0.0, 1.0, issues, required=True
        )
        stderr = _vector(
            doc, (*here, "stderr"), item.get("stderr"), space, 0.0, math.inf, issues, required=False
        )
        weight = _vector(
            doc, (*here, "weight"), item.get("weight"), space, 0.0, 1.0, issues, required=False
        )
        if reward is None:
            continue
        if weight is not None and weight.sum() > 0:
            weight = weight / weight.sum()
        cands_l.append(Candidate(id=cid, reward=reward, stderr=stderr, weight=weight))
    if issues:
        raise ManifestError(issues)
    return _select(CandidateSet(space, tuple(cands_l), doc.filename), traits, doc)


def _vector(
    doc: LocatedYAML,
    path: tuple[str | int, ...],
    value: Any,
    space: TraitSpace,
    lo: float,
    hi: float,
    issues: list[ConfigIssue],
    *,
    required: bool,
) -> FloatArray | None:
    if value is None:
        if required:
            issues.append(doc.issue(path, f"missing {path[-1]}: a mapping over {list(space)}"))
        return None
    if not isinstance(value, dict):
        issues.append(doc.issue(path, f"{path[-1]} must be a mapping {{trait: value}}"))
        return None
    ok = True
    out = np.zeros(space.dim)
    for k, v in value.items():
        if str(k) not in space:
            issues.append(
                doc.issue((*path, str(k)), f"unknown trait {k!r}; traits are {list(space.names)}")
            )
            ok = False
            continue
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not math.isfinite(v)
            or not lo <= v <= hi
        ):
            issues.append(
                doc.issue((*path, str(k)), f"must be a number in [{lo:g}, {hi:g}]; got {v!r}")
            )
            ok = False
            continue
        out[space.index(str(k))] = float(v)
    missing = [t for t in space.names if t not in value]
    if missing and required:
        issues.append(doc.issue(path, f"missing traits {missing}; traits are {list(space)}"))
        ok = False
    return out if ok else None


def _select(cs: CandidateSet, traits: Sequence[str] | None, doc: LocatedYAML) -> CandidateSet:
    if traits is None or list(traits) == list(cs.space.names):
        return cs
    missing = [t for t in traits if t not in cs.space]
    if missing:
        raise ManifestError(
            doc.issue(
                ("traits",), f"traits {missing} are not in the file; it has {list(cs.space.names)}"
            )
        )
    idx = [cs.space.index(t) for t in traits]
    cands = tuple(
        Candidate(
            id=c.id,
            reward=c.reward[idx],
            stderr=None if c.stderr is None else c.stderr[idx],
            weight=None
            if c.weight is None or c.weight[idx].sum() <= 0
            else c.weight[idx] / c.weight[idx].sum(),
        )
        for c in cs.candidates
    )
    return CandidateSet(TraitSpace(traits), cands, cs.source)


def align_pool(pool: CandidateSet, space: TraitSpace) -> FloatArray:
    """The pool's rewards in the order of ``space``, shape (n, d).

    Raises:
        ManifestError: When the pool lacks one of the traits of ``space`` (naming the file).
    """
    missing = [t for t in space.names if t not in pool.space]
    if missing:
        raise ManifestError(
            ConfigIssue(
                f"the pool has traits {list(pool.space.names)} but the portfolio needs "
                f"{list(space.names)}; missing {missing}",
                file=pool.source,
                line=1,
                field="traits",
            )
        )
    idx = [pool.space.index(t) for t in space.names]
    return pool.rewards[:, idx]
