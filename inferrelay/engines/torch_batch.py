"""Concurrent requests to one torch decoder, decoded together in padded batches.

A request joins the next batch: the scheduler thread takes the requests
waiting (up to `parallel`, after waiting at most `gather_s` for more), pads
their prompts on the left to one length, and decodes them step by step in
one forward pass each, every sequence with its own sampling, penalties,
log probabilities and constraint. A sequence that ends (its end token, its
length, its grammar, or its reader gone) stops producing; the batch ends
when all have. Requests that arrive meanwhile wait for the next batch
(static batching: the KV cache of a running batch is not reshaped).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from inferrelay.engines.decoding import LogitSteps, Sampling

END = object()


@dataclass
class Sequence:
    """One request in a batch: its prompt, its limits, and where its tokens go."""

    ids: list[int]
    max_new: int
    sampling: Sampling
    guide: Any  # a constrained-decoding guide (engines/constrained.py), or None
    out: queue.Queue[object] = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    produced: int = 0
    done: bool = False


class PaddedBatcher:
    """Owns the model's forward passes once batching is on: `generate_ids` may be called from many threads."""

    def __init__(
        self,
        forward: Callable[..., Any],
        device: str,
        eos: set[int],
        pad_id: int,
        pick: Callable[[Any, Sampling, Any], int],
        parallel: int,
        gather_s: float = 0.005,
    ) -> None:
        self._forward = forward  # the model's forward pass (a wrapper, DeepSpeed's, may replace the model)
        self._device = device
        self._eos = eos
        self._pad = pad_id
        self._pick = pick
        self.parallel = parallel
        self._gather_s = gather_s
        self._waiting: queue.Queue[Sequence | None] = queue.Queue()
        self.batch_sizes: list[int] = []  # the size of each batch run, for the runtime's stats
        self._thread = threading.Thread(target=self._run, name="torch-batcher", daemon=True)
        self._thread.start()

    def generate_ids(self, ids: list[int], max_new: int, sampling: Sampling, guide: Any) -> Iterator[int]:
        sequence = Sequence(ids, max_new, sampling, guide)
        self._waiting.put(sequence)
        try:
            while (item := sequence.out.get()) is not END:
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            sequence.cancelled.set()  # the reader left: the batch stops producing for it

    def close(self) -> None:
        self._waiting.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while (first := self._waiting.get()) is not None:
            batch = [first]
            while len(batch) < self.parallel:
                try:
                    more = self._waiting.get(timeout=self._gather_s)
                except queue.Empty:
                    break
                if more is None:
                    self._waiting.put(None)  # close after this batch
                    break
                batch.append(more)
            self.batch_sizes.append(len(batch))
            try:
                self._decode(batch)
            except BaseException as exc:  # the model failed: every caller of this batch gets the error
                for sequence in batch:
                    if not sequence.done:
                        sequence.out.put(exc)
            for sequence in batch:
                sequence.out.put(END)

    def _decode(self, batch: list[Sequence]) -> None:
        import torch

        width = max(len(s.ids) for s in batch)
        rows = [[self._pad] * (width - len(s.ids)) + s.ids for s in batch]
        mask_rows = [[0] * (width - len(s.ids)) + [1] * len(s.ids) for s in batch]
        inputs = torch.tensor(rows, device=self._device)
        mask = torch.tensor(mask_rows, device=self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        steps = [LogitSteps(s.sampling) for s in batch]
        generators = [seeded_generator(torch, s.sampling, self._device) for s in batch]
        past = None
        with torch.inference_mode():
            while not all(s.done for s in batch):
                out = self._forward(
                    input_ids=inputs, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True
                )
                past = out.past_key_values
                chosen = []
                for row, sequence in enumerate(batch):
                    token = self._next(sequence, out.logits[row, -1].float(), steps[row], generators[row])
                    chosen.append(self._pad if token is None else token)
                inputs = torch.tensor([[t] for t in chosen], device=self._device)
                alive = torch.tensor([[0 if s.done else 1] for s in batch], device=self._device)
                mask = torch.cat([mask, alive], dim=1)
                positions = positions[:, -1:] + 1

    def _next(self, sequence: Sequence, logits: Any, steps: LogitSteps, generator: Any) -> int | None:
        """One step of one sequence: the token it takes, or None once it has ended."""
        import torch

        if sequence.done:
            return None
        if sequence.cancelled.is_set() or sequence.produced >= sequence.max_new:
            sequence.done = True
            return None
        if steps.active:
            logits = torch.from_numpy(steps.adjust(logits.cpu().numpy())).to(logits.device)
        guide = sequence.guide
        token = self._pick(guide.mask_torch(logits) if guide else logits, sequence.sampling, generator)
        if token in self._eos:
            sequence.done = True
            return None
        sequence.produced += 1
        sequence.out.put(steps.chosen(token))
        if (guide and guide.advance(token)) or sequence.produced >= sequence.max_new:
            sequence.done = True  # the grammar is complete, or the length reached: the answer ends here
        return token


def seeded_generator(torch: Any, sampling: Sampling, device: str) -> Any:
    """A request's own random stream: its seed's, or a fresh one."""
    generator = torch.Generator(device=device)
    if sampling.seed is not None:
        generator.manual_seed(sampling.seed)
    else:
        generator.seed()
    return generator
