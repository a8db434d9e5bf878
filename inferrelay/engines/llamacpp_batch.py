"""Continuous batching for llama.cpp: several requests decoded together in one context, one token each per step.

One scheduler thread owns a llama.cpp context holding up to `parallel` sequences. Each step it puts into one
batch a token for every sequence that is decoding and the next chunk of every prompt still being read, decodes
the batch once, and samples each sequence from its own logits row with a sampler built exactly as
`Llama.generate` builds it. A caller submits from any thread and reads its tokens from its own queue; a request
waiting joins between two steps, and the KV cells of a sequence that ends or is abandoned are freed at once.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError

from inferrelay.config.strict import Strict
from inferrelay.engines.base import Constraint
from inferrelay.engines.constrained import GuideMaker, TokenGuide
from inferrelay.engines.decoding import LogitSteps, Sampling
from inferrelay.errors import ErrorKind, InferrelayError

log = logging.getLogger(__name__)

DEFAULT_KV_CELLS = 8192
"""The default `parallel` keeps the cells of all sequences within this many (4 sequences of 2,048)."""
MAX_DEFAULT_PARALLEL = 4
_END = object()


class BatchOptions(Strict):
    """A model's `engine_options.llamacpp` (all of them are about batching)."""

    parallel: int | None = Field(default=None, ge=1, le=64, description="sequences decoded together")
    slot_context: int | None = Field(
        default=None, gt=0, description="KV cells of each sequence, its longest prompt and answer together"
    )
    kv_unified: bool = Field(
        default=False, description="one pool of cells for all sequences instead of a stream per sequence"
    )


@dataclass(frozen=True)
class BatchPlan:
    """How many sequences run together, and the KV cells of each."""

    parallel: int
    slot_context: int
    kv_unified: bool = False
    n_batch: int = 512

    @property
    def n_ctx(self) -> int:
        return self.parallel * self.slot_context

    @classmethod
    def for_model(cls, options: dict[str, Any], context_length: int) -> BatchPlan:
        """`parallel` defaults to min(4, 8192 // context_length), at least 1; each sequence gets the model's
        whole context (`slot_context`), in a KV stream of its own unless `kv_unified`."""
        try:
            chosen = BatchOptions.model_validate(options)
        except ValidationError as exc:
            raise InferrelayError(ErrorKind.MODEL_LOAD_FAILED, f"engine_options.llamacpp: {exc}") from exc
        parallel = chosen.parallel or max(1, min(MAX_DEFAULT_PARALLEL, DEFAULT_KV_CELLS // context_length))
        slot = min(chosen.slot_context or context_length, context_length)
        return cls(parallel, slot, chosen.kv_unified)


@dataclass(eq=False)
class _Sequence:
    """One request inside the scheduler."""

    prompt: list[int]
    max_new: int
    sampling: Sampling
    guide: TokenGuide | None
    steps: LogitSteps
    out: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    seq_id: int = -1
    fed: int = 0  # prompt tokens already in the KV cache
    produced: int = 0
    last: int = -1  # the token sampled last, fed in the next step
    sampler: Any = None

    @property
    def decoding(self) -> bool:
        return self.fed == len(self.prompt)


class BatchDecoder:
    """The scheduler of one loaded llama.cpp model: `generate_ids` may be called from many threads at once."""

    def __init__(
        self,
        llm: Any,
        plan: BatchPlan,
        is_eog: Callable[[int], bool],
        guides: GuideMaker,
        processors: Callable[[LogitSteps, TokenGuide | None], list[Any] | None],
    ) -> None:
        import llama_cpp
        import llama_cpp._internals as internals

        self._llama_cpp = llama_cpp
        self._llm = llm
        self.plan = plan
        self._is_eog = is_eog
        self._guides = guides
        self._processors = processors
        # the Llama's own settings (flash attention off, KV types, threads), so the arithmetic is the unbatched one
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx = plan.n_ctx
        params.n_batch = params.n_ubatch = plan.n_batch
        params.n_seq_max = plan.parallel
        params.kv_unified = plan.kv_unified
        self._context = internals.LlamaContext(model=llm._model, params=params, verbose=False)
        if llama_cpp.llama_n_ctx_seq(self._context.ctx) < plan.slot_context:
            self._context.close()
            raise InferrelayError(ErrorKind.MODEL_LOAD_FAILED, f"llama.cpp gave fewer KV cells than {plan}")
        self._memory = llama_cpp.llama_get_memory(self._context.ctx)
        self._batch = llama_cpp.llama_batch_init(plan.n_batch, 0, 1)
        self._free_ids = list(range(plan.parallel))
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llamacpp-batch", daemon=True)
        self._thread.start()

    @property
    def parallel(self) -> int:
        return self.plan.parallel

    def generate_ids(
        self, ids: list[int], max_new: int, sampling: Sampling, constraint: Constraint | None = None
    ) -> Iterator[int]:
        """New token ids for `ids`, as `Llama.generate` would give them alone; closing the iterator frees the
        sequence at the next step."""
        if len(ids) + max_new > self.plan.slot_context:
            raise InferrelayError(
                ErrorKind.CONTEXT_LENGTH,
                f"{len(ids)} prompt tokens and {max_new} more pass a sequence's {self.plan.slot_context} cells",
            )
        guide = self._guides.start(constraint)  # a refused grammar is the caller's error, raised here
        sequence = _Sequence(list(ids), max_new, sampling, guide, LogitSteps(sampling))
        return self._follow(sequence)

    def _follow(self, sequence: _Sequence) -> Iterator[int]:
        with self._wake:
            if self._closing:
                raise InferrelayError(ErrorKind.INTERNAL, "the llama.cpp model is closed")
            self._waiting.append(sequence)
            self._wake.notify()
        try:
            while True:
                item = sequence.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            sequence.cancelled.set()
            with self._wake:
                self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        self._llama_cpp.llama_batch_free(self._batch)
        self._context.close()

    # The scheduler thread: everything below runs on it alone.

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self._running and not self._waiting_admissible():
                    self._wake.wait()
                if self._closing:
                    break
                self._admit()
            self._drop_cancelled()
            if self._running:
                try:
                    self._step()
                except Exception as exc:  # a failed decode fails every sequence of the batch, not the thread
                    log.exception("llama.cpp batch step failed")
                    for sequence in list(self._running):
                        self._finish(sequence, _as_error(exc))
        closed = InferrelayError(ErrorKind.INTERNAL, "the llama.cpp model was closed during the request")
        for sequence in [*self._running, *self._waiting]:
            self._finish(sequence, closed)

    def _waiting_admissible(self) -> bool:
        return bool(self._waiting) and (bool(self._free_ids) or any(s.cancelled.is_set() for s in self._waiting))

    def _admit(self) -> None:
        """First come, first admitted, while a sequence id (and its cells) is free."""
        for sequence in [s for s in self._waiting if s.cancelled.is_set()]:
            self._waiting.remove(sequence)
            sequence.out.put(_END)
        while self._waiting and self._free_ids:
            sequence = self._waiting.popleft()
            sequence.seq_id = self._free_ids.pop(0)
            self._running.append(sequence)

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self._running if s.cancelled.is_set()]:
            self._finish(sequence, _END)

    def _step(self) -> None:
        """One batch: a token for each decoding sequence, then prompt chunks while room is left; one decode."""
        batch, budget = self._batch, self.plan.n_batch
        batch.n_tokens = 0
        sampled: list[tuple[_Sequence, int]] = []
        for sequence in self._running:
            if sequence.decoding:
                sampled.append((sequence, self._add(sequence.last, len(sequence.prompt) + sequence.produced - 1,
                                                     sequence.seq_id, True)))  # fmt: skip
        for sequence in self._running:
            room = budget - batch.n_tokens
            if sequence.decoding or room <= 0:
                continue
            chunk = sequence.prompt[sequence.fed : sequence.fed + room]
            for offset, token in enumerate(chunk):
                last = sequence.fed + offset == len(sequence.prompt) - 1
                index = self._add(token, sequence.fed + offset, sequence.seq_id, last)
                if last:
                    sampled.append((sequence, index))
            sequence.fed += len(chunk)
        status = self._llama_cpp.llama_decode(self._context.ctx, batch)
        if status != 0:
            raise InferrelayError(ErrorKind.INTERNAL, f"llama_decode failed ({status}) on a batch of {batch.n_tokens}")
        for sequence, index in sampled:
            try:
                self._sample(sequence, index)
            except Exception as exc:  # one sequence's grammar failing ends that sequence only
                self._finish(sequence, _as_error(exc))

    def _add(self, token: int, position: int, seq_id: int, logits: bool) -> int:
        batch = self._batch
        index = batch.n_tokens
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq_id
        batch.logits[index] = logits
        batch.n_tokens = index + 1
        return index

    def _sample(self, sequence: _Sequence, index: int) -> None:
        if sequence.sampler is None:
            sequence.sampler = self._sampler(sequence)
        token = sequence.sampler.sample(self._context, index)
        if self._is_eog(token):
            self._finish(sequence, _END)
            return
        sequence.out.put(sequence.steps.chosen(token))
        sequence.produced += 1
        sequence.last = token
        if sequence.produced >= sequence.max_new or (sequence.guide and sequence.guide.advance(token)):
            self._finish(sequence, _END)

    def _sampler(self, sequence: _Sequence) -> Any:
        """The chain `Llama.generate` builds (llama-cpp-python's own `_init_sampler`, with the arguments and
        logits processors the unbatched engine passes), so a request samples alike batched or alone."""
        seed = sequence.sampling.seed_within(32)
        self._llm.set_seed(seed if seed is not None else random.randrange(2**32))
        return self._llm._init_sampler(
            temp=sequence.sampling.temperature,
            top_p=sequence.sampling.top_p,
            top_k=0,
            min_p=0.0,
            repeat_penalty=1.0,
            logits_processor=self._processors(sequence.steps, sequence.guide),
        )

    def _finish(self, sequence: _Sequence, last: Any) -> None:
        """Free the sequence's cells and its id, and tell its caller."""
        if sequence in self._running:
            self._running.remove(sequence)
            self._llama_cpp.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
            self._free_ids.append(sequence.seq_id)
            self._free_ids.sort()
        if sequence.sampler is not None:
            sequence.sampler.close()
            sequence.sampler = None
        sequence.out.put(last)


def _as_error(exc: Exception) -> InferrelayError:
    if isinstance(exc, InferrelayError):
        return exc
    return InferrelayError(ErrorKind.INTERNAL, f"llama.cpp batched decoding failed: {exc}")
