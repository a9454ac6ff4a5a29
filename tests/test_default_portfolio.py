"""The shipped default portfolio (palm_middleware/data/smollm2): servable, certified, consistent."""

from __future__ import annotations

from palm_middleware import load_policy, load_portfolio
from palm_middleware.data import bundled
from palm_middleware.demo.prepare import PREPARERS, bases_of
from palm_middleware.portfolio.manifest import AdapterBackend, PromptedBackend


def test_every_member_can_be_served_from_the_package() -> None:
    path = bundled("smollm2/portfolio.yaml")
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


def test_it_is_measured_and_certified_and_matches_its_policy() -> None:
    portfolio = load_portfolio(bundled("smollm2/portfolio.yaml"))
    policy = load_policy(bundled("smollm2/policy.yaml"))
    assert portfolio.space.names == policy.space.names
    assert portfolio.certificate is not None
    gap = portfolio.certificate.multiplicative_gap
    assert gap is not None and gap < 0.1
    # Measured profiles carry standard errors (placeholders would be 0.5 with none).
    assert (portfolio.stderrs > 0).all()
    assert not (portfolio.rewards == 0.5).all(axis=1).any()
