"""Out of memory, a batch is halved and tried again, down to one row, and stays smaller (serving and batch jobs)."""

from __future__ import annotations

import numpy as np
import pytest

from inferrelay.engines.base import EmbeddingModel, Embeddings
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.routing.batching import Halving, embed_sorted


class Cramped(EmbeddingModel):
    """Runs out of memory above `fits` texts a batch: the policy under test is the runner's, not an engine's."""

    engine_name = "cramped"
    context_length = 512

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.sizes: list[int] = []

    def embed(self, texts: list[str], truncate: bool = True) -> Embeddings:
        self.sizes.append(len(texts))
        if len(texts) > self.fits:
            raise InferrelayError(ErrorKind.OUT_OF_MEMORY, f"{len(texts)} texts do not fit")
        return Embeddings(np.array([[len(t), 0.0] for t in texts], dtype=np.float32), len(texts))


def test_halves_until_it_fits_and_keeps_the_smaller_size() -> None:
    model = Cramped(fits=5)
    halvings: list[tuple[int, int]] = []
    halving = Halving(32, lambda size, half: halvings.append((size, half)))
    texts = [f"{'x' * i}" for i in range(1, 21)]
    vectors = halving(lambda size: embed_sorted(model, texts, size).vectors)
    assert halving.batch_size == 4
    assert halvings == [(32, 16), (16, 8), (8, 4)], "each halving is reported, for the request's remedies"
    assert [v[0] for v in vectors] == [float(len(t)) for t in texts], "every row, in input order"
    assert model.sizes[:3] == [20, 16, 8]
    halving(lambda size: embed_sorted(model, texts[:8], size).vectors)
    assert max(model.sizes[-2:]) == 4, "the next call starts at the reduced size"


def test_one_row_that_does_not_fit_is_an_error() -> None:
    with pytest.raises(InferrelayError) as caught:
        Halving(4, lambda size, half: None)(lambda size: embed_sorted(Cramped(fits=0), ["a", "b"], size))
    assert caught.value.kind is ErrorKind.OUT_OF_MEMORY
