"""Loading policies: schema errors located as file:line:col with the rule id, all at once."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from palm_middleware.exceptions import (
    PolicyError,
    PolicyInfeasibleError,
    PolicyValidationError,
    PolicyWarning,
)
from palm_middleware.policy import (
    GLOBAL_PERSONALIZATION,
    default_policy,
    load_policy,
    parse_policy,
    policy_from_data,
)
from palm_middleware.traits import TraitSpace

from .conftest import EXAMPLE, HEADER

Writer = Callable[..., Path]
REPO = Path(__file__).resolve().parents[2]


def test_example_loads_and_merges(write: Writer) -> None:
    p = load_policy(write(EXAMPLE, "org.yaml"))
    assert p.name == "default"
    assert p.space.names == ("safety", "helpfulness", "humor", "brevity")
    assert p.lower.tolist() == [0.2, 0, 0, 0]
    assert p.upper.tolist() == [1, 1, 0.3, 1]
    assert p.max_drift == 0.8
    assert p.min_events == 3
    assert p.personalization is False and p.exploration is False
    assert p.sources.lower[0] == ("safety-floor",)
    assert p.sources.upper[2] == ("humor-cap",)
    assert p.sources.personalization == ("no-personalization",)
    assert p.sources.exploration == ("no-explore",)
    assert p.prior_strength == 10.0
    assert re.fullmatch(r"[0-9a-f]{12}", p.version)
    assert p.rules[0].layer == "law" and p.rules[1].layer == "org"
    assert p.source is not None and p.source.endswith("org.yaml")


def test_stricter_rule_wins_and_ties_keep_every_rule() -> None:
    text = (
        HEADER
        + """\
  - {id: a, min: {safety: 0.1}, max: {humor: 0.5}, max_l1_from_default: 1.0, min_events: 2}
  - {id: b, min: {safety: 0.25}, max: {humor: 0.2}, max_l1_from_default: 0.6, min_events: 5}
  - {id: c, min: {safety: 0.25}, max: {humor: 0.4}, max_l1_from_default: 0.6, min_events: 1}
"""
    )
    p = parse_policy(text, "merge.yaml")
    assert p.lower[0] == 0.25 and p.sources.lower[0] == ("b", "c")
    assert p.upper[2] == 0.2 and p.sources.upper[2] == ("b",)
    assert p.max_drift == 0.6 and p.sources.max_drift == ("b", "c")
    assert p.min_events == 5 and p.sources.min_events == ("b",)
    assert p.personalization and p.exploration


def test_global_switch_is_cited() -> None:
    p = parse_policy(HEADER.replace("bounds:\n", "personalization: false\n"), "g.yaml")
    assert not p.personalization
    assert p.sources.personalization == (GLOBAL_PERSONALIZATION,)


def test_version_is_content_hash() -> None:
    a = parse_policy(EXAMPLE, "a.yaml")
    reordered = EXAMPLE.replace(
        "personalization: true\nexploration: true\n", "exploration: true\npersonalization: true\n"
    )
    assert parse_policy(reordered, "b.yaml").version == a.version
    changed = EXAMPLE.replace("min: {safety: 0.2}", "min: {safety: 0.21}")
    assert parse_policy(changed, "a.yaml").version != a.version


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyValidationError, match=r"nope\.yaml: file not found"):
        load_policy(tmp_path / "nope.yaml")


def test_yaml_syntax_error_is_located(write: Writer) -> None:
    path = write("version: 1\ntraits: [a, b\nbounds: []\n")
    with pytest.raises(PolicyValidationError, match=r"bad\.yaml:\d+:\d+: invalid YAML"):
        load_policy(path)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "[1, 2]\n", "just a string\n"])
def test_not_a_mapping(text: str) -> None:
    with pytest.raises(PolicyValidationError, match=r"e\.yaml.*must be a mapping"):
        parse_policy(text, "e.yaml")


@pytest.mark.parametrize(
    ("rule", "pattern"),
    [
        (
            "{id: r1, min: {safety: 1.5}}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.min\.safety: must be in \[0, 1\]; got 1\.5",
        ),
        (
            "{id: r1, max: {humor: -0.1}}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.max\.humor: must be in \[0, 1\]; got -0\.1",
        ),
        (
            "{id: r1, min: {safety: true}}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.min\.safety: must be a number; got True",
        ),
        (
            "{id: r1, min: {safety: .nan}}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.min\.safety: must be a finite number",
        ),
        (
            "{id: r1, max: {humor: '0.3'}}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.max\.humor: must be a number; got '0\.3'",
        ),
        (
            "{id: r1, max_l1_from_default: 2.5}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.max_l1_from_default: must be in \[0, 2\]",
        ),
        (
            "{id: r1, min_events: -1}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.min_events: must be >= 0; got -1",
        ),
        (
            "{id: r1, min_events: .inf}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.min_events: must be a finite number",
        ),
        (
            "{id: r1, min: {humour: 0.1}}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.min\.humour: unknown trait 'humour'",
        ),
        (
            "{id: r1, max: {Safety: 0.5}}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.max\.Safety: unknown trait",
        ),
        (
            "{id: r1, when: \"request.topic == 'politics'\", personalization: false}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.when: conditional rules .*not supported",
        ),
        (
            "{id: r1, action: use_default}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.action: rule actions",
        ),
        (
            "{id: r1, min: {safety: 0.1}, floor: 2}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.floor: "
            r"unknown key 'floor'; allowed keys: id",
        ),
        (
            "{id: r1, layer: national, min: {safety: 0.1}}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.layer: .*'law', 'org' or 'user'",
        ),
        (
            "{id: Bad_Id, min: {safety: 0.1}}",
            r"bad\.yaml:6:\d+: rule 'Bad_Id': bounds\[0\]\.id: String should match pattern",
        ),
        (
            "{id: 12, min: {safety: 0.1}}",
            r"bad\.yaml:6:\d+: bounds\[0\]\.id: Input should be a valid string; got 12",
        ),
        ("{min: {safety: 0.1}}", r"bad\.yaml:6:\d+: bounds\[0\]\.id: required field is missing"),
        (
            "{id: r1}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]: a rule needs at least one constraint",
        ),
        (
            "{id: r1, personalization: true}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.personalization: a rule can only switch",
        ),
        (
            "{id: r1, exploration: 'no'}",
            r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.exploration: Input should be a valid bool",
        ),
        ("{id: r1, min: {}}", r"bad\.yaml:6:\d+: rule 'r1': bounds\[0\]\.min: .*at least 1 item"),
    ],
)
def test_bad_rule_is_located(write: Writer, rule: str, pattern: str) -> None:
    path = write(HEADER + f"  - {rule}\n")
    with pytest.raises(PolicyValidationError, match=pattern):
        load_policy(path)


def test_error_column_points_at_the_value(write: Writer) -> None:
    path = write(HEADER + "  - id: minors-safety\n    min:\n      safety: 1.5\n", "org.yaml")
    with pytest.raises(PolicyValidationError) as info:
        load_policy(path)
    assert str(info.value) == (
        f"{path}:8:7: rule 'minors-safety': bounds[0].min.safety: must be in [0, 1]; got 1.5"
    )
    assert info.value.source == (str(path), 8, 7)


def test_duplicate_rule_ids(write: Writer) -> None:
    path = write(HEADER + "  - {id: r1, min: {safety: 0.1}}\n  - {id: r1, max: {humor: 0.5}}\n")
    with pytest.raises(
        PolicyValidationError,
        match=r"bad\.yaml:7:\d+: rule 'r1': bounds\[1\]\.id: duplicate rule id 'r1' "
        r"\(first defined at line 6\)",
    ):
        load_policy(path)


@pytest.mark.parametrize(
    ("defaults", "pattern"),
    [
        (
            "{weights: {safety: 0.5, helpfulness: 0.4}}",
            r"bad\.yaml:3:\d+: defaults\.weights: weights must sum to 1; they sum to 0\.9",
        ),
        (
            "{weights: {safety: 0.5, helpfulness: 0.5, humour: 0.0}}",
            r"bad\.yaml:3:\d+: defaults\.weights\.humour: unknown trait 'humour'",
        ),
        (
            "{weights: {safety: 1.2, helpfulness: -0.2}}",
            r"bad\.yaml:3:\d+: defaults\.weights\.safety: must be in \[0, 1\]; got 1\.2",
        ),
        ("{prior_strength: 0}", r"bad\.yaml:3:\d+: defaults\.prior_strength: must be > 0; got 0"),
        (
            "{prior: 3}",
            r"bad\.yaml:3:\d+: defaults\.prior: unknown key 'prior'; allowed keys: weights",
        ),
    ],
)
def test_bad_defaults(write: Writer, defaults: str, pattern: str) -> None:
    text = f"version: 1\ntraits: [safety, helpfulness, humor, brevity]\ndefaults: {defaults}\n"
    with pytest.raises(PolicyValidationError, match=pattern):
        load_policy(write(text))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("version: 3\ntraits: [a]\n", r"bad\.yaml:1:\d+: version: Input should be 1 or 2; got 3"),
        ("traits: [a]\n", r"bad\.yaml:1:1: version: required field is missing"),
        ("version: 1\ntraits: []\n", r"bad\.yaml:2:\d+: traits: .*at least 1 item"),
        (
            "version: 1\ntraits: [a, a]\n",
            r"bad\.yaml:2:\d+: traits\[1\]: trait 'a' is listed twice",
        ),
        (
            "version: 1\ntraits: [a, B]\n",
            r"bad\.yaml:2:\d+: traits\[1\]: trait name 'B' is invalid",
        ),
        (
            "version: 1\ntraits: [a]\nprivacy: {store: weights_only}\n",
            r"bad\.yaml:3:\d+: privacy: the 'privacy' section is not supported by policy version 1",
        ),
        (
            "version: 1\ntraits: [a]\npersonalisation: false\n",
            r"bad\.yaml:3:\d+: personalisation: unknown key 'personalisation'; allowed keys",
        ),
        (
            "version: 1\ntraits: [a]\nexploration: 1\n",
            r"bad\.yaml:3:\d+: exploration: Input should be a valid boolean; got 1",
        ),
        (
            "version: 1\ntraits: [a]\nbounds: {id: x}\n",
            r"bad\.yaml:3:\d+: bounds: Input should be a valid list",
        ),
        (
            "version: 1\ntraits: [a]\nbounds: [3]\n",
            r"bad\.yaml:3:\d+: bounds\[0\]: Input should be a valid dictionary",
        ),
    ],
)
def test_bad_top_level(write: Writer, text: str, pattern: str) -> None:
    with pytest.raises(PolicyValidationError, match=pattern):
        load_policy(write(text))


def test_all_issues_reported_at_once(write: Writer) -> None:
    text = HEADER + (
        "  - {id: r1, min: {safety: 1.5}}\n"
        "  - {id: r2, max: {humour: 0.3}}\n"
        "  - {id: r2, when: 'x', personalization: false}\n"
        "privacy: {}\n"
    )
    with pytest.raises(PolicyValidationError) as info:
        load_policy(write(text))
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.issues) == 5
    assert [i.line for i in info.value.issues] == sorted(i.line or 0 for i in info.value.issues)
    joined = "\n".join(lines)
    for frag in [
        "rule 'r1'",
        "unknown trait 'humour'",
        "duplicate rule id 'r2'",
        "bounds[2].when",
        "privacy",
    ]:
        assert frag in joined


# -- feasibility ------------------------------------------------------------------------------


def test_floors_above_one_name_every_contributing_rule(write: Writer) -> None:
    text = HEADER + (
        "  - {id: safety-floor, min: {safety: 0.5}}\n"
        "  - {id: weak-floor, min: {safety: 0.1}}\n"
        "  - {id: help-floor, min: {helpfulness: 0.4}}\n"
        "  - {id: brevity-floor, min: {brevity: 0.3}}\n"
    )
    with pytest.raises(
        PolicyInfeasibleError,
        match=r"bad\.yaml:6:\d+: rule 'safety-floor': .*floors sum to 1\.2 > 1",
    ) as info:
        load_policy(write(text))
    assert info.value.rule_ids == ["safety-floor", "help-floor", "brevity-floor"]
    assert "weak-floor" not in str(info.value)


def test_caps_below_one(write: Writer) -> None:
    text = HEADER + (
        "  - {id: caps-a, max: {safety: 0.2, helpfulness: 0.2}}\n"
        "  - {id: caps-b, max: {humor: 0.2, brevity: 0.2}}\n"
    )
    with pytest.raises(
        PolicyInfeasibleError,
        match=r"bad\.yaml:6:\d+: rule 'caps-a': .*caps sum "
        r"to 0\.8 < 1",
    ) as info:
        load_policy(write(text))
    assert info.value.rule_ids == ["caps-a", "caps-b"]


def test_floor_above_cap_names_both(write: Writer) -> None:
    text = HEADER + "  - {id: lo, min: {humor: 0.4}}\n  - {id: hi, max: {humor: 0.3}}\n"
    with pytest.raises(
        PolicyInfeasibleError,
        match=r"bad\.yaml:6:\d+: rule 'lo': bounds\[0\]\.min\.humor: floor 0\.4 on 'humor' "
        r"\(rule 'lo'\) is above its cap 0\.3 \(rule 'hi'\)",
    ) as info:
        load_policy(write(text))
    assert info.value.rule_ids == ["lo", "hi"]


def test_drift_ball_missing_the_box(write: Writer) -> None:
    # The default has safety 0.3; a floor of 0.6 is at L1 distance 0.6 from it.
    text = HEADER + (
        "  - {id: safety-floor, layer: law, min: {safety: 0.6}}\n"
        "  - {id: tight-drift, max_l1_from_default: 0.5}\n"
    )
    with pytest.raises(
        PolicyInfeasibleError,
        match=r"bad\.yaml:7:\d+: rule 'tight-drift': bounds\[1\]\.max_l1_from_default: "
        r"max_l1_from_default 0\.5 .* distance 0\.6 .*rule 'safety-floor'",
    ) as info:
        load_policy(write(text))
    assert info.value.rule_ids == ["tight-drift", "safety-floor"]


def test_drift_exactly_reaching_the_box_is_feasible() -> None:
    text = HEADER + "  - {id: f, min: {safety: 0.6}}\n  - {id: d, max_l1_from_default: 0.6}\n"
    with pytest.warns(PolicyWarning, match="default weight 0.3 for 'safety' breaks the floor"):
        p = parse_policy(text, "ok.yaml")
    x = p.effective_default
    assert x[0] >= 0.6 - 1e-9 and np.abs(x - p.default.values).sum() <= 0.6 + 1e-9


def test_default_outside_bounds_warns_and_is_clamped() -> None:
    text = HEADER + "  - {id: humor-cap, max: {humor: 0.05}}\n"
    with pytest.warns(
        PolicyWarning,
        match=r"w\.yaml:4:\d+: rule 'humor-cap': defaults\.weights\.humor: default weight 0\.1",
    ):
        p = parse_policy(text, "w.yaml")
    r = p.clamp(p.default.values, evidence=0, personalized=False)
    assert r.used_default and r.rules_fired == ("humor-cap",)
    assert "the default itself was clamped by rule 'humor-cap'" in r.reason
    assert r.weights[2] <= 0.05 + 1e-12
    assert abs(r.weights.sum() - 1) < 1e-12


def test_several_conflicts_reported_together(write: Writer) -> None:
    text = HEADER + (
        "  - {id: lo, min: {humor: 0.5, safety: 0.6}}\n  - {id: hi, max: {humor: 0.3}}\n"
    )
    with pytest.raises(PolicyInfeasibleError) as info:
        load_policy(write(text))
    assert len(info.value.issues) == 2
    assert set(info.value.rule_ids) == {"lo", "hi"}


# -- programmatic construction ----------------------------------------------------------------


def test_default_policy() -> None:
    space = TraitSpace(["a", "b", "c"])
    p = default_policy(space)
    assert p.space == space and p.name == "default"
    np.testing.assert_allclose(p.default.values, [1 / 3] * 3)
    assert p.max_drift is None and p.min_events == 0 and p.personalization and p.exploration
    r = p.clamp(np.array([1.0, 0.0, 0.0]), evidence=0)
    assert r.weights.tolist() == [1.0, 0.0, 0.0] and r.rules_fired == () and not r.used_default


def test_from_dict_round_trip() -> None:
    data = yaml.safe_load(EXAMPLE)
    p = policy_from_data(data)
    assert p.version == parse_policy(EXAMPLE, "x.yaml").version
    assert p.source == "<dict>"
    q = policy_from_data(p.to_dict())
    assert q.version == p.version
    assert yaml.safe_load(yaml.safe_dump(p.to_dict())) == p.to_dict()


def test_from_dict_errors_name_the_rule() -> None:
    data = yaml.safe_load(EXAMPLE)
    data["bounds"][0]["min"]["safety"] = 2
    with pytest.raises(
        PolicyValidationError,
        match=r"^<dict>: rule 'safety-floor': bounds\[0\]\.min\.safety: must be in \[0, 1\]",
    ):
        policy_from_data(data)


def test_shipped_presets_are_valid() -> None:
    presets = sorted((REPO / "policies").glob("*.yaml"))
    assert presets
    for path in presets:
        p = load_policy(path)  # filterwarnings=error: presets must not warn either
        assert p.rules


# -- fuzz ------------------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["safety", "humor", "law", "org", "x", "min", "max"]),
)
_KEYS = st.sampled_from(
    [
        "version",
        "name",
        "traits",
        "defaults",
        "weights",
        "prior_strength",
        "bounds",
        "id",
        "layer",
        "min",
        "max",
        "max_l1_from_default",
        "min_events",
        "personalization",
        "exploration",
        "when",
        "safety",
        "humor",
        "brevity",
        "helpfulness",
        "zzz",
    ]
)
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=200))
def test_fuzz_text_raises_only_policy_errors(text: str) -> None:
    try:
        parse_policy(text, "fuzz.yaml")
    except PolicyError:
        pass


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_TREES)
def test_fuzz_structures_raise_only_policy_errors(tree: object) -> None:
    doc = tree
    if isinstance(tree, dict):
        doc = {"version": 1, "traits": ["safety", "helpfulness", "humor", "brevity"], **tree}
    text = yaml.safe_dump(doc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PolicyWarning)  # a valid policy may warn; not the point
        try:
            parse_policy(text, "fuzz.yaml")
        except PolicyError:
            pass


def test_yaml_syntax_error_is_a_located_policy_syntax_error() -> None:
    from palm_middleware.exceptions import PolicySyntaxError

    with pytest.raises(PolicySyntaxError, match=r"s\.yaml:3:1: invalid YAML"):
        parse_policy("version: 2\ntraits: [a, b\n", "s.yaml")
    with pytest.raises(PolicySyntaxError, match="larger than"):
        parse_policy("#" * (5 * 1024 * 1024), "huge.yaml")
