"""The shipped default portfolio (palm_middleware/data/smollm2): servable, certified, consistent.

It is served on ``smollm2-genai-int4-gguf`` (the GGUF's own 4-bit blocks in the GenAI model
builder's fused graph; ``-lora`` for the adapter members); ``portfolio-fp32.yaml`` serves the
same members on the ``palm prepare-base`` fp32 export (no builder: what tests and CI can prepare).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from palm_middleware import load_policy, load_portfolio
from palm_middleware.data import bundled
from palm_middleware.demo.prepare import (
    DEFAULT_GENAI,
    FP32_PORTFOLIO,
    GENAI_BASES,
    PREPARERS,
    bases_of,
    resolve_bases,
)
from palm_middleware.exceptions import ModelLoadError
from palm_middleware.portfolio.manifest import AdapterBackend, PromptedBackend

MANIFESTS = ["smollm2/portfolio.yaml", FP32_PORTFOLIO]


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_member_can_be_served_from_the_package(name: str) -> None:
    path = bundled(name)
    portfolio = load_portfolio(path)
    assert len(portfolio.ids) >= 2
    for m in portfolio.members:
        assert isinstance(m.backend, (PromptedBackend, AdapterBackend)), m.id
        if isinstance(m.backend, AdapterBackend):
            adapter = (path.parent / m.backend.adapter).resolve()
            assert adapter.is_file(), adapter
            assert adapter.stat().st_size <= 5_000_000  # issue 7: ship adapters <= 5 MB
    # Every base is one `palm demo` knows how to prepare offline.
    assert set(bases_of(portfolio)) <= set(PREPARERS)


@pytest.mark.parametrize("name", MANIFESTS)
def test_it_is_measured_and_certified_and_matches_its_policy(name: str) -> None:
    portfolio = load_portfolio(bundled(name))
    policy = load_policy(bundled("smollm2/policy.yaml"))
    assert portfolio.space.names == policy.space.names
    assert portfolio.certificate is not None
    gap = portfolio.certificate.multiplicative_gap
    assert gap is not None and gap < 0.1
    # Measured profiles carry standard errors (placeholders would be 0.5 with none).
    assert (portfolio.stderrs > 0).all()
    assert not (portfolio.rewards == 0.5).all(axis=1).any()


def test_the_default_serves_int4_gguf_and_the_fp32_twin_needs_no_builder() -> None:
    """Same members, prompts and adapter files; only the bases (and measured rewards) differ."""
    served = load_portfolio(bundled("smollm2/portfolio.yaml"))
    fp32 = load_portfolio(bundled(FP32_PORTFOLIO))
    assert set(bases_of(served)) <= GENAI_BASES
    # The prompted member on the 4-bit graph, the adapter members on it with LoRA sites.
    # Its rewards were measured on those graphs (the manifest says so).
    for m in served.members:
        assert isinstance(m.backend, (PromptedBackend, AdapterBackend)), m.id
        lora = isinstance(m.backend, AdapterBackend)
        assert m.backend.base == (f"{DEFAULT_GENAI}-lora" if lora else DEFAULT_GENAI), m.id
        assert m.provenance is not None, m.id
        assert "GenAI int4-gguf graph" in (m.provenance.prompt_set or ""), m.id
    assert not set(bases_of(fp32)) & GENAI_BASES
    assert served.ids == fp32.ids
    for a, b in zip(served.members, fp32.members):
        assert a.backend is not None and b.backend is not None
        assert a.backend.model_dump(exclude={"base"}) == b.backend.model_dump(exclude={"base"})


def test_a_failed_builder_setup_names_the_step_and_the_fallback(tmp_path: Path) -> None:
    """The builder's environment cannot be created (its folder is a file here): the error says
    which base and step failed and how to serve the members without the builder."""
    (tmp_path / "smollm2").mkdir()
    (tmp_path / "genai-builder").write_text("not a folder")
    served = load_portfolio(bundled("smollm2/portfolio.yaml"))
    with pytest.raises(ModelLoadError) as err:
        resolve_bases(served, {"smollm2": tmp_path / "smollm2"}, progress=False)
    msg = str(err.value)
    assert f"preparing base '{DEFAULT_GENAI}' failed" in msg
    assert "creating the GenAI model builder's environment" in msg
    assert str(tmp_path / "genai-builder") in msg
    assert f"--portfolio {bundled(FP32_PORTFOLIO)}" in msg


def test_given_folders_are_used_as_they_are(tmp_path: Path) -> None:
    served = load_portfolio(bundled("smollm2/portfolio.yaml"))
    given = {b: tmp_path / b for b in bases_of(served)}
    assert resolve_bases(served, given, progress=False) == given
