"""``OnnxEngine``: a generation loop on raw ONNX Runtime with a per-request KV cache.

One engine serves one portfolio member. Full models, prompted members (system prompt, few-shot
examples, default decoding parameters over a shared base) and LoRA members (an
``.onnx_adapter`` activated per request) are all an ``OnnxEngine`` over a shared
:class:`~palm_middleware.engines.model.OnnxModel` with a different configuration.

Each request owns its KV cache, sampler RNG and detokenizer, so concurrent requests to one
member (threads, or the async methods, which run in an executor) never interfere;
``InferenceSession.run`` and ``run_with_iobinding`` are thread-safe.

The cache (``_kvcache``) is a numpy array set carried through ``session.run``, or, when the
session runs on CUDA (or ``RuntimeOptions(io_binding=True)`` on CPU), OrtValues kept on the
device through ``session.io_binding()``: each step's ``present.*`` are bound as the next
step's ``past_key_values.*`` without a host copy; only the logits come to the host. Members
with a LoRA adapter always use ``session.run``, because ``run_with_iobinding`` ignores active
adapters (onnx.md §5). The CUDA path is untested on hardware (no GPU here): it is the code the
CPU-bound tests run, with device ``"cuda"`` instead of ``"cpu"``.

With ``RuntimeOptions(batch_decode=True)`` the decode steps of concurrent requests to one model
(without an adapter, on the numpy path) run as one batched ``session.run`` (``_batcher``):
each request keeps its own cache, sampler and detokenizer, and gets the tokens it would get
alone; prefill stays per request.

Example (not run here: it needs a model folder)::

    engine = OnnxEngine("models/smollm2", system_prompt="Answer in one line.")
    out = engine.generate([{"role": "user", "content": "Capital of France?"}],
                          {"max_tokens": 32})
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..exceptions import GenerationError, InvalidParameterError
from ._batcher import BatchedCache
from ._kvcache import BoundCache, KVCache, NumpyCache
from ._runtime import RuntimeOptions, import_ort
from ._sampling import Sampler
from ._text import IncrementalDecoder, StopMatcher
from .base import (
    Chunk,
    FinishReason,
    Generation,
    GenerationParams,
    Message,
    Prompt,
    Usage,
)
from .grammar import Constraint, constrained_token
from .model import OnnxModel
from .registry import SessionRegistry

__all__ = ["OnnxEngine", "normalize_few_shot"]

ParamsLike = GenerationParams | Mapping[str, Any] | None

_DONE = object()


def normalize_few_shot(examples: Sequence[Mapping[str, str]]) -> tuple[dict[str, str], ...]:
    """Few-shot examples as chat messages.

    Accepts messages (``{"role": ..., "content": ...}``) or pairs (``{"user": ...,
    "assistant": ...}``), as a manifest's ``few_shot`` list may hold either.
    """
    out: list[dict[str, str]] = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, Mapping):
            raise InvalidParameterError(f"few_shot[{i}] must be a mapping; got {ex!r}")
        if set(ex) == {"role", "content"}:
            out.append({"role": str(ex["role"]), "content": str(ex["content"])})
        elif set(ex) == {"user", "assistant"}:
            out.append({"role": "user", "content": str(ex["user"])})
            out.append({"role": "assistant", "content": str(ex["assistant"])})
        else:
            raise InvalidParameterError(
                f"few_shot[{i}] must have keys role/content or user/assistant; got {sorted(ex)}"
            )
    return tuple(out)


def _step_feeds(
    names: frozenset[str], step_ids: np.ndarray[Any, Any], total: int
) -> dict[str, Any]:
    """One step's inputs: ``step_ids`` are the last of ``total`` tokens the model has seen."""
    n = step_ids.shape[1]
    feeds: dict[str, Any] = {"input_ids": step_ids}
    if "attention_mask" in names:
        feeds["attention_mask"] = np.ones((1, total), dtype=np.int64)
    if "position_ids" in names:
        feeds["position_ids"] = np.arange(total - n, total, dtype=np.int64)[None, :]
    return feeds


class OnnxEngine:
    """Runs one member on ONNX Runtime.

    Args:
        model: A model folder (loaded lazily through ``registry``) or a loaded
            :class:`OnnxModel`.
        registry: Where folders are loaded and shared; a private one when ``None``.
        options: Runtime options of the private registry (ignored with ``registry``).
        system_prompt: Prepended as a system message to chat prompts (prompted members).
        few_shot: Example turns inserted after the system prompt.
        defaults: Decoding parameters used when a request passes none, and the base that a
            request's mapping of parameters is applied to.
        adapter: An ``.onnx_adapter`` file activated for every request of this member.
        name: Identifier reported in :attr:`Generation.model`.
        executor: Where the async methods run the loop; the event loop's default when ``None``.
    """

    def __init__(
        self,
        model: str | Path | OnnxModel,
        *,
        registry: SessionRegistry | None = None,
        options: RuntimeOptions | None = None,
        system_prompt: str | None = None,
        few_shot: Sequence[Mapping[str, str]] = (),
        defaults: ParamsLike = None,
        adapter: str | Path | None = None,
        name: str | None = None,
        executor: Executor | None = None,
    ) -> None:
        if isinstance(model, OnnxModel):
            self._loaded: OnnxModel | None = model
            self.path = model.path
        else:
            self._loaded = None
            self.path = Path(model)
        self.registry = registry if registry is not None else SessionRegistry(options)
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InvalidParameterError(f"system_prompt must be a string; got {system_prompt!r}")
        self.system_prompt = system_prompt
        self.few_shot = normalize_few_shot(few_shot)
        self.defaults = (
            defaults
            if isinstance(defaults, GenerationParams)
            else GenerationParams().merged(defaults)
        )
        self.adapter = Path(adapter) if adapter is not None else None
        self._name = name or self.path.name + (f"+{self.adapter.stem}" if self.adapter else "")
        self.executor = executor

    @property
    def name(self) -> str:
        """The member's identifier."""
        return self._name

    def __repr__(self) -> str:
        return f"OnnxEngine({self._name!r}, path={str(self.path)!r})"

    @property
    def model(self) -> OnnxModel:
        """The loaded model (loads it through the registry on first use)."""
        if self._loaded is not None:
            return self._loaded
        return self.registry.get(self.path)

    def load(self) -> OnnxEngine:
        """Load the model (and adapter) now instead of on the first request; returns ``self``."""
        model = self.model
        if self.adapter is not None:
            model.adapter(self.adapter)
        return self

    # -- request preparation -------------------------------------------------------------------

    def _params(self, params: ParamsLike) -> GenerationParams:
        if isinstance(params, GenerationParams):
            return params
        if params is None or isinstance(params, Mapping):
            return self.defaults.merged(params)
        raise GenerationError(
            f"params must be GenerationParams, a mapping or None; got {type(params).__name__}"
        )

    def encode_prompt(self, prompt: Prompt, model: OnnxModel | None = None) -> list[int]:
        """Token ids of ``prompt`` as this member sends it to the model.

        A string is tokenized as is (with the tokenizer's special tokens), unless the member
        has a system prompt or few-shot examples: then it becomes one user message. Messages are
        rendered with the model's chat template after the member's system prompt and examples.
        """
        model = model or self.model
        if isinstance(prompt, str) and (self.system_prompt is not None or self.few_shot):
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(prompt, str):
            ids = list(model.tokenizer.encode(prompt, add_special_tokens=True).ids)
        elif isinstance(prompt, Sequence):
            given = cast(Sequence[Message], prompt)  # str was handled above
            messages: list[Message] = []
            if self.system_prompt is not None:
                messages.append({"role": "system", "content": self.system_prompt})
            messages.extend(self.few_shot)
            messages.extend(given)
            if model.chat_template is None:
                raise GenerationError(
                    f"{model.path}: the model has no chat template (tokenizer_config.json "
                    "chat_template or chat_template.jinja); send a raw prompt string instead"
                )
            text = model.chat_template.render(messages)
            # The template already wrote BOS and role markers; don't let the tokenizer add more.
            ids = list(model.tokenizer.encode(text, add_special_tokens=False).ids)
        else:
            raise GenerationError(
                f"prompt must be a string or a list of messages; got {type(prompt).__name__}"
            )
        if not ids:
            raise GenerationError("the prompt is empty after tokenization; send some text")
        if model.max_context is not None and len(ids) >= model.max_context:
            raise GenerationError(
                f"the prompt has {len(ids)} tokens; {model.path.name} takes at most "
                f"{model.max_context} (prompt + completion); shorten the prompt"
            )
        return ids

    def _run_options(self, model: OnnxModel) -> Any:
        if self.adapter is None:
            return None
        ort = import_ort()
        ro = ort.RunOptions()
        # A RunOptions per request: the adapter is a per-run setting, the session is shared.
        ro.add_active_adapter(model.adapter(self.adapter))
        return ro

    # -- the loop -------------------------------------------------------------------------------

    def uses_io_binding(self, model: OnnxModel | None = None) -> bool:
        """Whether this member's requests keep their KV cache on the device (IO binding).

        Never with an adapter: ``run_with_iobinding`` ignores the ``RunOptions``' active
        adapters (onnx.md §5) and would silently serve the base model.
        """
        model = model or self.model
        return self.adapter is None and bool(model.kv_inputs) and model.binding_device is not None

    def _cache(self, model: OnnxModel) -> KVCache:
        """A new cache for one request: device-bound if possible, else numpy via ``run``.

        Decode steps are batched with other requests' (``batch_decode``) only without an
        adapter: the adapter is a per-run setting, so one run cannot mix adapters.
        """
        where = model.path.name
        if self.uses_io_binding(model):
            assert model.binding_device is not None  # checked by uses_io_binding
            return BoundCache(
                model.session, model.kv_inputs, model.logits_name, model.binding_device, where
            )
        if self.adapter is None and model.batcher is not None:
            return BatchedCache(model.batcher)
        return NumpyCache(
            model.session, model.kv_inputs, model.output_names, self._run_options(model), where
        )

    def _tokens(
        self,
        model: OnnxModel,
        prompt_ids: list[int],
        params: GenerationParams,
        cancel: threading.Event | None,
        constraint: Constraint | None = None,
    ) -> Iterator[int]:
        """Sampled token ids, one per model step (KV cache carried between steps).

        With a ``constraint``, each step's logits are masked to the tokens its grammar allows,
        and the loop ends once the grammar is complete.
        """
        cache = self._cache(model)
        sampler = Sampler(params)
        names = model.input_names
        vocab = model.tokenizer.get_vocab_size()
        all_ids = np.asarray([prompt_ids], dtype=model.ids_dtype)
        step_ids = all_ids
        total = len(prompt_ids)  # tokens the model has seen after this step's input
        n_new = params.max_tokens
        if model.max_context is not None:
            n_new = min(n_new, model.max_context - total)
        try:
            for _ in range(n_new):
                if cancel is not None and cancel.is_set():
                    return
                if not model.kv_inputs:  # no cache in the graph: re-run the whole sequence
                    step_ids = all_ids
                logits = cache.step(_step_feeds(names, step_ids, total))
                if model.vocab_size is None and logits.shape[0] < vocab:
                    raise GenerationError(
                        f"{model.path}: the model predicts {logits.shape[0]} tokens but the "
                        "tokenizer has more; the tokenizer belongs to another model"
                    )
                token = constrained_token(sampler, logits, constraint, model.eos_token_ids)
                yield token
                if constraint is not None and constraint.done:
                    return
                step_ids = np.asarray([[token]], dtype=model.ids_dtype)
                if not model.kv_inputs:
                    all_ids = np.concatenate([all_ids, step_ids], axis=1)
                total += 1
        finally:
            cache.close()  # a batcher must not wait for a finished or abandoned request

    def _chunks(
        self, prompt: Prompt, params: ParamsLike, cancel: threading.Event | None = None
    ) -> Iterator[Chunk]:
        p = self._params(params)
        model = self.model
        prompt_ids = self.encode_prompt(prompt, model)
        tok = model.tokenizer

        def decode(ids: Sequence[int]) -> str:
            return str(tok.decode(list(ids), skip_special_tokens=True))

        decoder = IncrementalDecoder(decode)
        stopper = StopMatcher(p.stop)
        constraint = Constraint(p.grammar, model) if p.grammar is not None else None
        sampled: list[int] = []
        unreported = 0  # sampled ids not yet attached to a chunk
        stopped = False  # an EOS token or a stop sequence ended the text
        rest = ""
        for token in self._tokens(model, prompt_ids, p, cancel, constraint):
            sampled.append(token)
            unreported += 1
            if token in model.eos_token_ids:
                stopped = True
                break
            delta = decoder.push(token)
            if not delta:
                continue
            out, stopped = stopper.feed(delta)
            if stopped:
                rest = out
                break
            if out:
                yield Chunk(out, tuple(sampled[len(sampled) - unreported :]))
                unreported = 0
        if not stopped or sampled[-1] in model.eos_token_ids:
            # Held-back text (incomplete characters, a possible stop prefix) is final now; a
            # stop sequence can still complete inside it.
            out, hit = stopper.feed(decoder.flush())
            rest = out if hit else out + stopper.flush()
            stopped = stopped or hit or (constraint is not None and constraint.done)
        finish: FinishReason = "stop" if stopped else "length"
        yield Chunk(
            rest,
            tuple(sampled[len(sampled) - unreported :]) if unreported else (),
            finish_reason=finish,
            usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(sampled)),
        )

    # -- public API -----------------------------------------------------------------------------

    def stream(self, prompt: Prompt, params: ParamsLike = None) -> Iterator[Chunk]:
        """Yield text as it completes; the last chunk has ``finish_reason`` and ``usage``."""
        yield from self._chunks(prompt, params)

    def generate(self, prompt: Prompt, params: ParamsLike = None) -> Generation:
        """The full completion (the joined text of :meth:`stream`)."""
        return self._collect(self._chunks(prompt, params))

    def _collect(self, chunks: Iterator[Chunk]) -> Generation:
        parts: list[str] = []
        ids: list[int] = []
        last: Chunk | None = None
        for c in chunks:
            parts.append(c.text)
            ids.extend(c.token_ids)
            last = c
        assert last is not None and last.finish_reason is not None and last.usage is not None
        return Generation("".join(parts), tuple(ids), last.finish_reason, last.usage, self._name)

    async def agenerate(self, prompt: Prompt, params: ParamsLike = None) -> Generation:
        """Async :meth:`generate`: the loop runs in ``executor``; cancelling stops it."""
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        call = functools.partial(self._collect, self._chunks(prompt, params, cancel))
        try:
            return await loop.run_in_executor(self.executor, call)
        finally:
            cancel.set()  # a cancelled caller must not leave the loop running to max_tokens

    async def astream(self, prompt: Prompt, params: ParamsLike = None) -> AsyncIterator[Chunk]:
        """Async :meth:`stream`: a worker thread fills a queue the event loop reads."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody reads any more
                cancel.set()

        def produce() -> None:
            try:
                for chunk in self._chunks(prompt, params, cancel):
                    put(chunk)
                    if cancel.is_set():
                        return
            except BaseException as exc:  # handed to the consumer, re-raised there
                put(exc)
            else:
                put(_DONE)

        worker = loop.run_in_executor(self.executor, produce)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            await asyncio.wait([worker])
