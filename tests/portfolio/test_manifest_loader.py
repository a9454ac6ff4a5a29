from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from palm_middleware import ManifestError
from palm_middleware.portfolio.manifest import load_portfolio, parse_portfolio

GOOD = """\
version: 1
name: t
traits: [helpfulness, brevity]
default_member: b
members:
  - id: a
    backend: {kind: onnx, path: models/a}
    reward: {helpfulness: 0.9, brevity: 0.2}
    provenance: {prompt_set: p1, n: 150, stderr: {helpfulness: 0.02, brevity: 0.01}}
  - id: b
    backend: {kind: prompted, base: smollm2, system_prompt: "Be brief.",
              generation: {temperature: 0.7}}
    reward: {helpfulness: 0.5, brevity: 0.9}
  - id: c
    backend: {kind: adapter, base: smollm2, adapter: adapters/c.onnx_adapter}
    reward: {helpfulness: 0.7, brevity: 0.6}
  - id: d
    backend: {kind: litellm, model: openai/gpt-4o-mini}
    reward: {helpfulness: 0.6, brevity: 0.5}
certificate: {eps: 0.05, delta: 0.01, method: greedy, additive_gap: 0.004}
"""


def test_loads_every_backend_kind(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    pf = load_portfolio(f)
    assert pf.ids == ("a", "b", "c", "d")
    assert [m.backend.kind for m in pf.members if m.backend] == [
        "onnx",
        "prompted",
        "adapter",
        "litellm",
    ]
    np.testing.assert_allclose(pf.rewards[0], [0.9, 0.2])
    np.testing.assert_allclose(pf.stderrs[0], [0.02, 0.01])
    assert pf.certificate is not None and pf.certificate.additive_gap == 0.004
    assert pf.default_member == "b"


def test_round_trip(tmp_path: Path) -> None:
    pf = parse_portfolio(GOOD, "p.yaml")
    out = tmp_path / "out.yaml"
    pf.save(out)
    again = load_portfolio(out)
    assert again.ids == pf.ids
    np.testing.assert_allclose(again.rewards, pf.rewards)
    assert again.member("b").backend == pf.member("b").backend
    assert again.certificate == pf.certificate


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            GOOD.replace("brevity: 0.2}", "brevity: 1.2}"),
            r"p\.yaml:8:\d+: members\[0\]\.reward\.brevity: reward must be in \[0, 1\]; got 1\.2",
        ),
        (GOOD.replace("brevity: 0.2}", "brevity: .nan}"), r"p\.yaml:8:\d+: .*must be in \[0, 1\]"),
        (
            GOOD.replace("{helpfulness: 0.9, brevity: 0.2}", "{helpfulness: 0.9, wit: 0.2}"),
            r"p\.yaml:8:\d+: members\[0\]\.reward\.wit: unknown trait 'wit'",
        ),
        (
            GOOD.replace("{helpfulness: 0.9, brevity: 0.2}", "{helpfulness: 0.9}"),
            r"p\.yaml:8:\d+: members\[0\]\.reward: missing traits \['brevity'\]",
        ),
        (
            GOOD.replace("  - id: b\n", "  - id: a\n"),
            r"p\.yaml:10:5: members\[1\]\.id: duplicate member id 'a'",
        ),
        (
            GOOD.replace("kind: onnx, path: models/a", "kind: onnx"),
            r"p\.yaml:7:\d+: members\[0\]\.backend.*path: Field required",
        ),
        (GOOD.replace("kind: litellm", "kind: vllm"), r"p\.yaml:\d+:\d+: members\[3\]\.backend"),
        (
            GOOD.replace("default_member: b", "default_member: z"),
            r"p\.yaml:4:\d+: default_member: 'z' is not a member id",
        ),
        (GOOD.replace("version: 1", "version: 1\nextra: 3"), r"p\.yaml:2:1: extra: Extra inputs"),
        ("traits: [a, b]\nmembers: []\n", r"members: List should have at least 1 item"),
        ("traits: [a\n", r"p\.yaml:2:1: invalid YAML"),
        ("", r"p\.yaml: a manifest must be a mapping"),
        (
            "traits: [A]\nmembers: [{id: x, reward: {A: 1}}]\n",
            r"p\.yaml:1:1: traits: trait name 'A' is invalid",
        ),
    ],
)
def test_bad_manifest_errors_name_file_line_field(text: str, match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        parse_portfolio(text, "p.yaml")


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nope\.yaml: file not found"):
        load_portfolio(tmp_path / "nope.yaml")


def test_errors_are_reported_all_at_once() -> None:
    text = GOOD.replace("brevity: 0.2}", "brevity: 1.2}").replace("brevity: 0.9}", "brevity: -1}")
    with pytest.raises(ManifestError) as info:
        parse_portfolio(text, "p.yaml")
    assert len(info.value.issues) == 2
    assert info.value.source[0] == "p.yaml" and info.value.source[1] == 8
