"""A broken policy never disables bounds: mutated v2 files are refused at load, and a reload
from a broken file keeps the last good policy enforcing every bound."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palm_middleware import PolicyError
from palm_middleware.data import bundled
from palm_middleware.policy import parse_policy
from palm_middleware.policy.reload import ReloadingPolicy

GOOD = bundled("policy.yaml").read_text()
PRESETS = sorted((Path(__file__).resolve().parents[2] / "policies").glob("*.yaml"))


def _mutate(text: str, data: st.DataObject) -> str:
    """One random edit of a real policy: delete, duplicate or replace a span, or swap a value."""
    n = len(text)
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(i, min(n, i + 40)))
    kind = data.draw(st.sampled_from(["delete", "duplicate", "replace", "number"]))
    if kind == "delete":
        return text[:i] + text[j:]
    if kind == "duplicate":
        return text[:j] + text[i:j] + text[j:]
    if kind == "replace":
        junk = data.draw(st.text(alphabet=" \n\t:-[]{}#'\"!&*,.0123456789abcxyz", max_size=12))
        return text[:i] + junk + text[j:]
    value = data.draw(st.sampled_from(["-1", "2.5", "nan", ".inf", "true", "null", "[]", "{}"]))
    return text[:i] + value + text[j:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PRESETS), st.data())
def test_mutated_presets_load_or_raise_policy_errors_only(
    preset: Path, data: st.DataObject
) -> None:
    text = _mutate(preset.read_text(), data)
    try:
        policy = parse_policy(text, preset.name)
    except PolicyError as exc:
        assert str(exc)  # every refusal says something
        return
    # Whatever still loads is a complete, feasible policy: its default satisfies its bounds.
    w = policy.clamp(policy.default.values, evidence=0.0).weights
    assert np.all(w >= policy.lower - 1e-9) and np.all(w <= policy.upper + 1e-9)
    assert abs(float(w.sum()) - 1.0) < 1e-9


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data(), st.lists(st.floats(0, 1), min_size=4, max_size=4).filter(lambda v: sum(v) > 0))
def test_a_broken_reload_keeps_the_last_good_bounds(
    tmp_path: Path, data: st.DataObject, raw: list[float]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    reloading = ReloadingPolicy(path, min_interval=0.0)
    good = reloading.current
    broken = _mutate(GOOD, data)
    try:
        parse_policy(broken, "policy.yaml")
        return  # the edit left a valid policy: nothing to show here
    except PolicyError:
        pass
    path.write_text(broken)
    os.utime(path, ns=(1, 1))  # a different mtime even within the clock's resolution
    assert reloading.poll(force=True) is False
    assert reloading.current is good and reloading.error is not None
    w = np.asarray(raw) / sum(raw)
    out = reloading.current.clamp(w, evidence=1e6).weights
    assert np.all(out >= good.lower - 1e-9) and np.all(out <= good.upper + 1e-9)
