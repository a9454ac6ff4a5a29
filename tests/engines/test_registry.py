"""SessionRegistry: shared sessions, lazy loading, LRU eviction under a memory budget."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry
from palm_middleware.exceptions import InvalidParameterError, ModelLoadError

from .conftest import TinyModel


@pytest.fixture()
def three(tiny: TinyModel, tmp_path: Path) -> list[Path]:
    out = []
    for name in ("a", "b", "c"):
        shutil.copytree(tiny.path, tmp_path / name)
        out.append(tmp_path / name)
    return out


def _cost(path: Path) -> int:
    return int((path / "model.onnx").stat().st_size * 1.5)


def test_lazy_and_shared(three: list[Path]) -> None:
    reg = SessionRegistry()
    e1, e2 = (
        OnnxEngine(three[0], registry=reg),
        OnnxEngine(three[0], registry=reg, system_prompt="Be brief."),
    )
    assert len(reg) == 0  # constructing engines loads nothing
    e1.generate("hi", {"max_tokens": 2})
    e2.generate("hi", {"max_tokens": 2})
    assert e1.model is e2.model and len(reg) == 1 and reg.n_loads_ == 1
    assert three[0] in reg and str(three[0]) in reg and 3 not in reg


def test_same_folder_through_other_spellings(three: list[Path]) -> None:
    reg = SessionRegistry()
    alias = three[0].parent / "alias"
    alias.symlink_to(three[0])
    assert reg.get(three[0]) is reg.get(alias) is reg.get(three[0] / ".." / "a")


def test_lru_eviction_under_budget(three: list[Path]) -> None:
    a, b, c = three
    reg = SessionRegistry(memory_budget=2 * _cost(a) + 10)
    reg.get(a)
    reg.get(b)
    reg.get(a)  # a is now most recently used
    reg.get(c)  # evicts b, the least recently used
    assert reg.loaded() == [reg.key(a), reg.key(c)]
    assert reg.n_evictions_ == 1
    assert reg.resident_bytes() <= reg.memory_budget  # type: ignore[operator]
    reg.get(b)  # reloads b, evicts a
    assert reg.loaded() == [reg.key(c), reg.key(b)]
    assert reg.n_loads_ == 4 and reg.n_evictions_ == 2


def test_evicted_model_keeps_serving_requests_in_flight(three: list[Path]) -> None:
    a, b = three[:2]
    reg = SessionRegistry(memory_budget=_cost(a) + 10)
    eng = OnnxEngine(a, registry=reg)
    held = reg.get(a)
    stream = eng.stream("Hello", {"max_tokens": 10})
    first = next(stream)
    reg.get(b)  # evicts a while the stream is open
    assert a not in reg
    rest = list(stream)
    assert (
        first.text + "".join(c.text for c in rest)
        == OnnxEngine(held).generate("Hello", {"max_tokens": 10}).text
    )


def test_model_larger_than_budget(three: list[Path]) -> None:
    reg = SessionRegistry(memory_budget=1000)
    with pytest.raises(
        ModelLoadError,
        match=r"needs about [\d,]+ bytes resident, more than the "
        r"registry's memory_budget of 1,000",
    ):
        reg.get(three[0])
    assert len(reg) == 0


def test_bad_budget() -> None:
    with pytest.raises(InvalidParameterError, match="memory_budget must be None or a positive"):
        SessionRegistry(memory_budget=0)
    with pytest.raises(InvalidParameterError, match="overhead must be >= 1"):
        SessionRegistry(overhead=0.5)


def test_preload_evict_clear(three: list[Path]) -> None:
    reg = SessionRegistry()
    models = reg.preload(three)
    assert [m.path for m in models] == [reg.key(p) for p in three]
    assert len(reg) == 3
    assert reg.evict(three[1]) and not reg.evict(three[1])
    reg.clear()
    assert len(reg) == 0 and reg.resident_bytes() == 0


def test_concurrent_first_requests_load_once(three: list[Path]) -> None:
    reg = SessionRegistry()
    with ThreadPoolExecutor(max_workers=8) as pool:
        models = list(pool.map(lambda _: reg.get(three[0]), range(16)))
    assert all(m is models[0] for m in models)
    assert reg.n_loads_ == 1


def test_failed_load_is_not_cached(three: list[Path]) -> None:
    reg = SessionRegistry()
    (three[0] / "tokenizer.json").rename(three[0] / "tok.bak")
    with pytest.raises(ModelLoadError, match="tokenizer.json is missing"):
        reg.get(three[0])
    (three[0] / "tok.bak").rename(three[0] / "tokenizer.json")
    assert reg.get(three[0]) is not None
