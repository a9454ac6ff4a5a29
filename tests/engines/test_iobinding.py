"""The IO-binding decode path (KV cache kept in OrtValues), forced on CPU.

On CUDA the engine takes this path automatically; the code is the same with device "cuda", so
these tests are what covers it here (no GPU on the test machine).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from palm_middleware.engines._kvcache import BindingDevice, binding_device
from palm_middleware.engines._runtime import RuntimeOptions
from palm_middleware.engines.base import Generation
from palm_middleware.engines.onnx import OnnxEngine
from palm_middleware.engines.registry import SessionRegistry

from .conftest import TinyModel
from .tiny import mixed_requests, reference_greedy

F32 = npt.NDArray[np.float32]
CHAT = [{"role": "user", "content": "Héllo, who are you? 🙂"}]


@pytest.fixture(scope="module")
def bound_registry() -> SessionRegistry:
    return SessionRegistry(RuntimeOptions(device="cpu", io_binding=True))


@pytest.fixture(scope="module")
def bound(tiny: TinyModel, bound_registry: SessionRegistry) -> OnnxEngine:
    return OnnxEngine(tiny.path, registry=bound_registry)


class _Calls:
    """Counts the session's ``run`` and ``run_with_iobinding`` calls (from any thread)."""

    def __init__(self, engine: OnnxEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.run = 0
        self.bound = 0
        session = engine.model.session
        run, run_bound = session.run, session.run_with_iobinding

        def counting_run(*args: Any, **kwargs: Any) -> Any:
            self.run += 1
            return run(*args, **kwargs)

        def counting_bound(*args: Any, **kwargs: Any) -> Any:
            self.bound += 1
            return run_bound(*args, **kwargs)

        monkeypatch.setattr(session, "run", counting_run)
        monkeypatch.setattr(session, "run_with_iobinding", counting_bound)


def _requests() -> list[tuple[str, dict[str, object]]]:
    return mixed_requests(8, 20, 2)


def _strip(gen: Generation) -> tuple[str, tuple[int, ...], str, Any]:
    return gen.text, gen.token_ids, gen.finish_reason, gen.usage


def test_binding_device_is_cuda_automatically_and_cpu_only_on_request() -> None:
    class FakeSession:
        def __init__(self, providers: list[str], options: dict[str, dict[str, str]]) -> None:
            self._providers, self._options = providers, options

        def get_providers(self) -> list[str]:
            return self._providers

        def get_provider_options(self) -> dict[str, dict[str, str]]:
            return self._options

    cuda = FakeSession(
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        {"CUDAExecutionProvider": {"device_id": "1"}},
    )
    cpu = FakeSession(["CPUExecutionProvider"], {"CPUExecutionProvider": {}})
    assert binding_device(cuda, None) == BindingDevice("cuda", 1)
    assert binding_device(cuda, True) == BindingDevice("cuda", 1)
    assert binding_device(cuda, False) is None
    assert binding_device(FakeSession(["CUDAExecutionProvider"], {}), None) == BindingDevice(
        "cuda", 0
    )
    assert binding_device(cpu, None) is None
    assert binding_device(cpu, False) is None
    assert binding_device(cpu, True) == BindingDevice("cpu", 0)


def test_default_cpu_sessions_keep_using_run(engine: OnnxEngine, bound: OnnxEngine) -> None:
    assert engine.model.binding_device is None and not engine.uses_io_binding()
    assert bound.model.binding_device == BindingDevice("cpu") and bound.uses_io_binding()


def test_greedy_tokens_equal_the_run_path_and_the_reference(
    engine: OnnxEngine, bound: OnnxEngine, tiny: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _Calls(bound, monkeypatch)
    for prompt in ["Hello world", "The quick brown fox", "日本語"]:
        ids = bound.encode_prompt(prompt)
        out = bound.generate(prompt, {"max_tokens": 24})
        assert list(out.token_ids) == reference_greedy(tiny.weights, ids, 24)
        assert _strip(out) == _strip(engine.generate(prompt, {"max_tokens": 24}))
    assert calls.run == 0 and calls.bound == 3 * 24  # one bound run per step, none via run


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": 40},
        {"max_tokens": 40, "temperature": 0.8, "seed": 1},
        {"max_tokens": 40, "temperature": 1.3, "top_k": 20, "top_p": 0.9, "seed": 7},
        {"max_tokens": 40, "temperature": 1.0, "seed": 3, "stop": ["e"]},
    ],
)
def test_stream_equals_generate_equals_the_run_path(
    engine: OnnxEngine, bound: OnnxEngine, params: dict[str, Any]
) -> None:
    whole = bound.generate(CHAT, params)
    chunks = list(bound.stream(CHAT, params))
    assert "".join(c.text for c in chunks) == whole.text
    assert tuple(i for c in chunks for i in c.token_ids) == whole.token_ids
    assert chunks[-1].finish_reason == whole.finish_reason
    assert chunks[-1].usage == whole.usage
    # Same logits up to float noise -> same samples, stops and usage as session.run.
    assert _strip(whole) == _strip(engine.generate(CHAT, params))


def test_concurrent_requests_have_their_own_binding_and_cache(
    engine: OnnxEngine, bound: OnnxEngine
) -> None:
    reqs = _requests()
    expected = [_strip(engine.generate(p, k)) for p, k in reqs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda r: bound.generate(*r), reqs))
        streamed = list(pool.map(lambda r: list(bound.stream(*r)), reqs))
    assert [_strip(g) for g in threaded] == expected
    for chunks, (text, ids, _, usage) in zip(streamed, expected, strict=True):
        assert "".join(c.text for c in chunks) == text
        assert tuple(i for c in chunks for i in c.token_ids) == ids
        assert chunks[-1].usage == usage

    async def main() -> list[Generation]:
        return list(await asyncio.gather(*(bound.agenerate(p, k) for p, k in reqs)))

    assert [_strip(g) for g in asyncio.run(main())] == expected


def _adapter(tiny_lora: TinyModel, path: Path, rank: int = 3) -> dict[str, F32]:
    """An ``.onnx_adapter`` for the tiny LoRA graph's q sites; returns its parameters."""
    rng = np.random.default_rng(11)
    d = tiny_lora.weights["h.0.q"].shape[0]
    params = {}
    for i in range(2):
        params[f"lora.{i}.q.A"] = (rng.standard_normal((d, rank)) * 0.5).astype(np.float32)
        params[f"lora.{i}.q.B"] = (rng.standard_normal((rank, d)) * 0.5).astype(np.float32)
    af = ort.AdapterFormat()
    af.set_adapter_version(1)
    af.set_model_version(1)
    af.set_parameters({n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in params.items()})
    af.export_adapter(str(path))
    return params


def test_adapter_members_fall_back_to_run_and_apply_the_adapter(
    tiny_lora: TinyModel,
    bound_registry: SessionRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "a.onnx_adapter"
    params = _adapter(tiny_lora, path)
    base = OnnxEngine(tiny_lora.path, registry=bound_registry)
    member = OnnxEngine(tiny_lora.path, registry=bound_registry, adapter=path)
    assert base.uses_io_binding() and not member.uses_io_binding()
    prompt, n = "The quick brown fox", 16
    ids = member.encode_prompt(prompt)

    calls = _Calls(member, monkeypatch)  # same session as base: it counts both
    got = list(member.generate(prompt, {"max_tokens": n}).token_ids)
    assert (calls.run, calls.bound) == (n, 0)
    assert got == reference_greedy(tiny_lora.weights, ids, n, lora=params)

    plain = list(base.generate(prompt, {"max_tokens": n}).token_ids)
    assert (calls.run, calls.bound) == (n, n)
    assert plain == reference_greedy(tiny_lora.weights, ids, n)
    assert got != plain


def test_run_with_iobinding_still_ignores_adapters(tiny_lora: TinyModel, tmp_path: Path) -> None:
    """Why adapters fall back (onnx.md §5). If this fails, ONNX Runtime now honours adapters
    under IO binding and the fallback in ``OnnxEngine.uses_io_binding`` can be revisited."""
    _adapter(tiny_lora, tmp_path / "a.onnx_adapter")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(
        str(tiny_lora.path / "model.onnx"), so, providers=["CPUExecutionProvider"]
    )
    adapter = ort.LoraAdapter()
    adapter.Load(str(tmp_path / "a.onnx_adapter"))
    ro = ort.RunOptions()
    ro.add_active_adapter(adapter)
    feeds = {
        "input_ids": np.array([[5, 6, 7]], dtype=np.int64),
        "attention_mask": np.ones((1, 3), dtype=np.int64),
        "position_ids": np.arange(3, dtype=np.int64)[None, :],
    }
    for i in range(2):
        for kv in ("key", "value"):
            feeds[f"past_key_values.{i}.{kv}"] = np.zeros((1, 4, 0, 8), dtype=np.float32)

    def logits(run_options: Any, bind: bool) -> F32:
        if not bind:
            out: F32 = session.run(["logits"], feeds, run_options)[0]
            return out
        b = session.io_binding()
        for name, array in feeds.items():
            b.bind_cpu_input(name, array)
        b.bind_output("logits", "cpu")
        session.run_with_iobinding(b, run_options)
        bound_out: F32 = b.get_outputs()[0].numpy()
        return bound_out

    base = logits(None, bind=False)
    assert not np.allclose(logits(ro, bind=False), base)  # run applies the adapter
    np.testing.assert_array_equal(logits(ro, bind=True), base)  # run_with_iobinding does not
