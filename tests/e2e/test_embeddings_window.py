"""Embedding inputs far past the model's window, against a real server and the openai client: cut to the window
as sentence-transformers does (or refused when asked), never an out-of-memory, and no model lowered for the
callers after."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from inferrelay.config.embedded import MINILM
from inferrelay.config.sources import resolve_source

pytestmark = pytest.mark.slow

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "zebras",
    "quietly",
    "eat",
    "bananas",
]
NORMAL = "Paris is the capital of France."
HANG_S = 120  # a client timeout that tells a hang from a slow machine; no test asserts on speed


def text_of(chars: int) -> str:
    """Words that differ along the text (a number on each), `chars` characters long."""
    words = (f"{WORDS[i % len(WORDS)]}{i % 997}" for i in range(chars // 4))
    return " ".join(words)[:chars]


@pytest.fixture
def server(start_server: Any, tmp_path: Path, test_home: Path) -> Any:
    home = tmp_path / "home"
    config = home / "config"
    config.mkdir(parents=True)
    (home / "cache").symlink_to(test_home / "cache")  # the ONNX export is built once per test home
    # the door's limits (runtime.limits) let a 5 MB input in: what happens past the window is the question here
    limits = "{max_body_bytes: 64MiB, max_text_chars: 6000000, max_input_chars: 6000000}"
    (config / "model-mappings.yaml").write_text(f"runtime:\n  limits: {limits}\n")
    return start_server(home, "--config", str(config))


def vector(client: openai.OpenAI, text: str, **extra: Any) -> np.ndarray:
    data = client.embeddings.create(model=MINILM.name, input=[text], extra_body=extra or None).data
    return np.asarray(data[0].embedding, dtype=np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def first_window_text(text: str) -> str:
    """The text of the model's first 256 word pieces, [CLS] and [SEP] among them, by its own tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(resolve_source(MINILM.source).path / "tokenizer.json"))
    tokenizer.no_truncation()
    ids = tokenizer.encode(text[:20_000]).ids
    assert len(ids) > 256
    return str(tokenizer.decode(ids[1:255]))


def test_inputs_past_the_window_are_cut_to_it_refused_when_asked_and_lower_nothing(server: Any) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=HANG_S)
    before = vector(client, NORMAL)
    huge = text_of(5 * 2**20)
    window = first_window_text(huge)
    exact = vector(client, window, truncate=False)  # 256 tokens: within the window, refused nothing

    for size in (2**20, 5 * 2**20):
        started = time.perf_counter()
        cut = vector(client, huge[:size])
        print(f"\n{size / 2**20:.0f} MB input answered in {time.perf_counter() - started:.2f}s")
        assert cosine(cut, exact) > 0.9999

    with pytest.raises(openai.BadRequestError) as refused:
        vector(client, huge[: 2**20], truncate=False)
    assert refused.value.status_code == 400
    assert refused.value.code == "context_length_exceeded"
    assert "input[0] has more than 256 tokens" in refused.value.message

    assert cosine(vector(client, NORMAL), before) > 0.9999  # still the configured precision
    view = httpx.get(f"{server.url}/api/v1/runtime/models/{MINILM.name}", timeout=HANG_S).json()
    assert [(slot["dtype"], slot["remedied"]) for slot in view["loaded"]] == [("float32", False)]
    assert not {e["what"] for e in view["events"]} & {"lower_precision", "moved_to_cpu"}
    stats = httpx.get(f"{server.url}/api/v1/runtime/stats", timeout=HANG_S).json()
    assert MINILM.name not in stats["remediation"]


def test_the_cut_matches_sentence_transformers_on_the_same_text(server: Any) -> None:
    from sentence_transformers import SentenceTransformer

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=HANG_S)
    long = text_of(200_000)
    reference = SentenceTransformer(str(resolve_source(MINILM.source).path), device="cpu").encode([long])[0]
    assert cosine(vector(client, long), reference) > 0.9999
