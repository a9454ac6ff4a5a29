"""A learned risk classifier: one logistic head per topic on MiniLM sentence embeddings.

Why a head and not a fine-tuned encoder: the project already embeds every message with
all-MiniLM-L6-v2 for topic prototypes, so a linear head costs one matrix product (microseconds)
on a vector that is computed anyway, trains in seconds with numpy/scipy, and ships as a few
kilobytes of plain arrays (``.npz``, no pickle) next to a JSON card with its provenance.

Training is one-vs-rest L2-regularised logistic regression (L-BFGS via scipy), classes
balanced per topic. The labelled set is split, stratified by label, into a training part and a
calibration part the heads never see; each topic's threshold is the lowest score that keeps the
false-positive rate on the calibration's harmless examples at or below ``max_fpr``, which gives
the highest recall at that rate.

The bundled model (``name: guard``) is trained on ``palm_middleware/data/guard/train.yaml`` by
``palm train-guard``; a deployment retrains on its own labelled data with the same command.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError, InvalidParameterError, NotFittedError
from ..types import FloatArray

__all__ = [
    "BUNDLED",
    "NONE_LABEL",
    "GuardClassifier",
    "LabelledText",
    "guard_path",
    "load_guard",
    "load_labelled",
    "semantic_text",
    "split_calibration",
    "train_guard",
]

#: The label of harmless examples in a training set.
NONE_LABEL = "none"
#: Name of the classifier shipped with the package.
BUNDLED = "guard"
FORMAT = 1


@dataclass(frozen=True)
class LabelledText:
    """One training example: a text, its topic (or ``none``), its language and where it is from."""

    text: str
    label: str
    lang: str = "en"
    kind: str = ""


def load_labelled(path: str | Path) -> list[LabelledText]:
    """Read a labelled set: YAML ``{examples: [{text, label, lang?, kind?}, ...]}``.

    Raises:
        ConfigError: unreadable file or an example without a non-empty ``text``/``label``
            (the message names the index and field).
    """
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read the labelled set ({exc})") from exc
    items = doc.get("examples") if isinstance(doc, Mapping) else None
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{p}: expected a mapping with a non-empty list 'examples'")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ConfigError(f"{p}: examples[{i}] must be a mapping with 'text' and 'label'")
        for key in ("text", "label"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise ConfigError(f"{p}: examples[{i}].{key} must be a non-empty string")
        out.append(
            LabelledText(
                item["text"], item["label"], str(item.get("lang", "en")), str(item.get("kind", ""))
            )
        )
    return out


def split_calibration(
    examples: Sequence[LabelledText], fraction: float = 0.3, *, random_state: int = 0
) -> tuple[list[LabelledText], list[LabelledText]]:
    """(training, calibration): ``fraction`` of each label, drawn with a seeded generator."""
    if not 0.0 < fraction < 1.0:
        raise InvalidParameterError(f"fraction must be in (0, 1); got {fraction!r}")
    rng = np.random.default_rng(random_state)
    train: list[LabelledText] = []
    calib: list[LabelledText] = []
    for label in sorted({e.label for e in examples}):
        group = [e for e in examples if e.label == label]
        order = rng.permutation(len(group))
        n_cal = max(1, round(fraction * len(group))) if len(group) > 1 else 0
        for rank, i in enumerate(order):
            (calib if rank < n_cal else train).append(group[i])
    return train, calib


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


class GuardClassifier:
    """One-vs-rest logistic heads over sentence embeddings.

    Args:
        l2: L2 penalty on the weights (not the intercept), per example.
        max_fpr: false-positive rate on calibration negatives that thresholds are set to.
        max_iter: L-BFGS iterations per head.

    Attributes:
        labels_: Topic labels, in column order.
        coef_: Weights, shape (n_labels, dim).
        intercept_: Biases, shape (n_labels,).
        thresholds_: Calibrated threshold per label (probability in [0, 1]).
        card_: Provenance and calibration results (written next to the arrays).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 8)); X /= np.linalg.norm(X, axis=1, keepdims=True)
        >>> y = ["risk" if x[0] > 0 else "none" for x in X]
        >>> clf = GuardClassifier().fit(X, y)
        >>> clf.labels_
        ('risk',)
    """

    def __init__(self, *, l2: float = 1e-3, max_fpr: float = 0.03, max_iter: int = 500) -> None:
        self.l2 = l2
        self.max_fpr = max_fpr
        self.max_iter = max_iter

    def fit(self, X: FloatArray, y: Sequence[str]) -> GuardClassifier:
        """Train one head per label of ``y`` other than ``none``; thresholds start at 0.5."""
        from scipy.optimize import minimize

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] != len(y):
            raise InvalidParameterError(
                f"X must have shape (n_samples, dim) with n_samples = len(y) = {len(y)}; "
                f"got {X.shape}"
            )
        if not (self.l2 >= 0 and 0 < self.max_fpr < 1 and self.max_iter >= 1):
            raise InvalidParameterError(
                "l2 must be >= 0, max_fpr in (0, 1), max_iter >= 1; got "
                f"{self.l2!r}, {self.max_fpr!r}, {self.max_iter!r}"
            )
        labels = tuple(sorted({lab for lab in y if lab != NONE_LABEL}))
        if not labels:
            raise InvalidParameterError("y has no label other than 'none': nothing to learn")
        n, d = X.shape
        yy = np.asarray(y)
        coefs, biases = [], []
        for label in labels:
            t = (yy == label).astype(np.float64)
            n_pos = float(t.sum())
            # Balanced classes: positives and negatives weigh half the loss each.
            w = np.where(t > 0, 0.5 / n_pos, 0.5 / max(n - n_pos, 1.0))

            def loss(theta: FloatArray, t: FloatArray = t, w: FloatArray = w) -> Any:
                z = X @ theta[:d] + theta[d]
                # log(1 + e^z) - t z, computed stably.
                nll = float(np.sum(w * (np.logaddexp(0.0, z) - t * z)))
                g = w * (_sigmoid(z) - t)
                grad = np.empty(d + 1)
                grad[:d] = X.T @ g + self.l2 * theta[:d]
                grad[d] = g.sum()
                return nll + 0.5 * self.l2 * float(theta[:d] @ theta[:d]), grad

            res = minimize(
                loss, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                options={"maxiter": self.max_iter},
            )  # fmt: skip
            coefs.append(res.x[:d])
            biases.append(res.x[d])
        self.labels_ = labels
        self.coef_ = np.asarray(coefs)
        self.intercept_ = np.asarray(biases)
        self.thresholds_ = {lab: 0.5 for lab in labels}
        self.card_: dict[str, Any] = {"n_train": n, "dim": d, "l2": self.l2}
        return self

    def _check(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("GuardClassifier is not fitted; call fit() or load_guard()")

    def predict_proba(self, X: FloatArray) -> FloatArray:
        """Probability per label, shape (n_samples, n_labels)."""
        self._check()
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return _sigmoid(X @ self.coef_.T + self.intercept_)

    def calibrate(self, X: FloatArray, y: Sequence[str]) -> dict[str, dict[str, float]]:
        """Set each label's threshold on held-out ``X, y``; returns recall/FPR per label."""
        P = self.predict_proba(X)
        yy = np.asarray(y)
        report: dict[str, dict[str, float]] = {}
        for j, label in enumerate(self.labels_):
            # Negatives are the harmless examples: another topic's prompt scoring high here is
            # still blocked, by its own rule; what the threshold must bound is harmless traffic.
            pos, neg = P[yy == label, j], P[yy == NONE_LABEL, j]
            if len(pos) == 0 or len(neg) == 0:
                raise InvalidParameterError(
                    f"calibration needs positives and negatives of {label!r}; got "
                    f"{len(pos)} and {len(neg)}"
                )
            # Lowest threshold whose FPR on negatives stays <= max_fpr.
            k = math.floor(self.max_fpr * len(neg))
            ranked = np.sort(neg)[::-1]
            t = float(ranked[k]) + 1e-6 if k < len(ranked) else 0.0
            t = min(max(t, 0.05), 0.95)
            self.thresholds_[label] = round(t, 6)
            report[label] = {
                "threshold": round(t, 4),
                "recall": round(float(np.mean(pos >= t)), 4),
                "fpr": round(float(np.mean(neg >= t)), 4),
                "n_pos": float(len(pos)),
                "n_neg": float(len(neg)),
            }
        self.card_["calibration"] = report
        return report

    def labels_of(self, X: FloatArray, thresholds: Mapping[str, float] | None = None) -> set[str]:
        """Labels whose probability, for any row of ``X``, reaches its threshold."""
        P = self.predict_proba(X).max(axis=0)
        th = {**self.thresholds_, **(thresholds or {})}
        return {lab for j, lab in enumerate(self.labels_) if P[j] >= th[lab]}

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (labels, thresholds, card)."""
        self._check()
        npz = guard_path(str(path))
        meta_path = npz.with_suffix(".json")
        npz.parent.mkdir(parents=True, exist_ok=True)
        with open(npz, "wb") as f:  # np.savez(path) would append ".npz" to "g.v2"
            np.savez(f, coef=self.coef_, intercept=self.intercept_)
        digest = hashlib.sha256(npz.read_bytes()).hexdigest()
        meta = {
            "format": FORMAT,
            "labels": list(self.labels_),
            "thresholds": self.thresholds_,
            "params": {"l2": self.l2, "max_fpr": self.max_fpr, "max_iter": self.max_iter},
            "npz_sha256": digest,
            "card": self.card_,
        }
        meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        return npz


def _bundled_path() -> Path:
    return Path(str(files("palm_middleware").joinpath("data", "guard", "guard.npz")))


def guard_path(name: str) -> Path:
    """The ``.npz`` file of classifier ``name``: ``guard`` (bundled) or a path."""
    if name == BUNDLED:
        return _bundled_path()
    p = Path(name)
    if p.suffix == ".json":
        p = p.with_suffix("")
    # "g.v2" is g.v2.npz, not g.npz (with_suffix would replace ".v2").
    return p if p.suffix == ".npz" else p.with_name(p.name + ".npz")


def load_guard(name: str) -> GuardClassifier:
    """Load classifier ``name`` (``guard``: the bundled one; else a ``.npz`` path).

    Raises:
        ConfigError: the files are missing, of another format, or the arrays do not match their
            card's checksum (a tampered or half-written model is refused, never half-used).
    """
    p = guard_path(name)
    meta_path = p.with_suffix(".json")
    try:
        raw = p.read_bytes()
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"guard classifier {name!r}: cannot read {p} and {meta_path} ({exc}); "
            "train one with `palm train-guard`"
        ) from exc
    if meta.get("format") != FORMAT:
        raise ConfigError(
            f"{meta_path}: format {meta.get('format')!r}, this version reads {FORMAT}"
        )
    if hashlib.sha256(raw).hexdigest() != meta.get("npz_sha256"):
        raise ConfigError(f"{p}: checksum differs from {meta_path}; retrain or restore both files")
    with np.load(p, allow_pickle=False) as z:
        coef, intercept = np.asarray(z["coef"]), np.asarray(z["intercept"])
    params = meta.get("params", {})
    clf = GuardClassifier(
        l2=float(params.get("l2", 1e-3)),
        max_fpr=float(params.get("max_fpr", 0.03)),
        max_iter=int(params.get("max_iter", 500)),
    )
    clf.labels_ = tuple(meta["labels"])
    clf.coef_, clf.intercept_ = coef, intercept
    clf.thresholds_ = {k: float(v) for k, v in meta["thresholds"].items()}
    clf.card_ = dict(meta.get("card", {}))
    if coef.shape[0] != len(clf.labels_) or intercept.shape != (len(clf.labels_),):
        raise ConfigError(f"{p}: arrays do not match the {len(clf.labels_)} labels of the card")
    return clf


def semantic_text(text: str) -> str:
    """The view of ``text`` the classifier embeds first (the same at training and at serving)."""
    from .normalize import text_views

    return text_views(text).semantic[0]


def train_guard(
    examples: Sequence[LabelledText],
    embed: Callable[[Sequence[str]], FloatArray],
    *,
    calibration: float = 0.3,
    max_fpr: float = 0.03,
    l2: float = 1e-3,
    random_state: int = 0,
    source: str = "",
) -> GuardClassifier:
    """Train heads on part of ``examples`` and calibrate thresholds on the rest.

    Args:
        examples: Labelled texts (``label: none`` for harmless ones).
        embed: Texts -> unit vectors (the serving embedder, so training sees what serving sees).
        calibration: Fraction of each label held out for the thresholds.
        max_fpr: False-positive rate the thresholds are set to on the held-out negatives.
        l2: L2 penalty.
        random_state: Seed of the split.
        source: Where the examples came from, written to the card.
    """
    train, calib = split_calibration(examples, calibration, random_state=random_state)

    def vectors(items: Sequence[LabelledText]) -> FloatArray:
        return np.asarray(embed([semantic_text(e.text) for e in items]), dtype=np.float64)

    clf = GuardClassifier(l2=l2, max_fpr=max_fpr).fit(vectors(train), [e.label for e in train])
    clf.calibrate(vectors(calib), [e.label for e in calib])
    digest = hashlib.sha256(
        "\n".join(f"{e.label}\t{e.text}" for e in examples).encode("utf-8")
    ).hexdigest()
    clf.card_.update(
        {
            "source": source,
            "examples_sha256": digest,
            "n_examples": len(examples),
            "n_calibration": len(calib),
            "random_state": random_state,
            "languages": sorted({e.lang for e in examples}),
        }
    )
    return clf
