"""Benchmark inferrelay's engines against the libraries they wrap, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/engines.py [--home DIR] [--quick] [--only text|embeddings]

For SmolLM2 (llamacpp, onnx, torch) it measures load time, time to first token
and tokens/s of a greedy answer; for all-MiniLM-L6-v2 (onnx, torch, and torch
through torch.compile, which a server runs only when the model's
engine_options ask: its load includes the compile) sentences/s.
Each inferrelay figure has a peer, the raw library on the same weights
(llama-cpp-python, onnxruntime-genai, transformers, sentence-transformers), so
the ratio shows what inferrelay adds. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from inferrelay.config.loading import load_settings
from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.config.sources import resolve_source
from inferrelay.engines.base import (
    EmbeddingModel,
    GenerationRequest,
    LoadedModel,
    Sampling,
    TextModel,
    TokenTextModel,
)
from inferrelay.engines.onnx_export import DECODER_PRECISION
from inferrelay.engines.registry import EngineRegistry
from inferrelay.routing.batching import embed_sorted

T = TypeVar("T")

DEFAULT_HOME = Path(tempfile.gettempdir()) / "inferrelay-bench"
RESULTS = Path(__file__).parent / "results"
TEXT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
TEXT_ENGINES = ("llamacpp", "onnx", "torch")
EMBED_ENGINES = ("onnx", "torch", "torch+compile")  # the last: engine_options.torch.compile, a server's opt-in
SYSTEM = "You are a helpful assistant."
STORY = "Write a long story about a dragon."
BATCH = 32
LIBRARIES = (
    "llama-cpp-python",
    "onnxruntime",
    "onnxruntime-genai",
    "torch",
    "transformers",
    "sentence-transformers",
)
WORDS = (
    "the a river mountain quickly small ancient engine server model whispered bright under over city "
    "garden seven blue library silent music computer wind ran across slowly forest old new light dark "
    "children painted window storm harbour coffee tomorrow yesterday because while never always clock "
    "bridge paper stone golden market singer carefully village ocean learned question answer"
)


@dataclass(frozen=True)
class Plan:
    max_tokens: int
    sentences: int
    repeats: int


FULL = Plan(max_tokens=128, sentences=2000, repeats=3)
QUICK = Plan(max_tokens=16, sentences=200, repeats=1)


# ---------------------------------------------------------------- timing


def timed(action: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def repeat_timed(prepare: Callable[[int], Callable[[], T]], repeats: int) -> tuple[list[float], T]:
    """`prepare(i)` readies call i untimed and returns the action to time; every call's seconds and the last result."""
    seconds: list[float] = []
    for index in range(repeats):
        elapsed, result = timed(prepare(index))
        seconds.append(elapsed)
    return seconds, result


@dataclass
class Loaded:
    handle: Any
    load_runs_s: list[float]
    first_load_s: float
    exported: bool

    @property
    def load_s(self) -> float:
        return statistics.median(self.load_runs_s)


def cache_entries(home: Path) -> set[str]:
    root = home / "cache"
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.is_dir() else set()


def load_repeatedly(load: Callable[[], Any], repeats: int, home: Path) -> Loaded:
    """Load `repeats` times and keep the last; a first load that built a cache entry stays out of the median."""
    before = cache_entries(home)
    first_s, handle = timed(load)
    exported = cache_entries(home) != before
    seconds = [] if exported and repeats > 1 else [first_s]
    for _ in range(repeats - 1):
        handle.close()
        elapsed, handle = timed(load)
        seconds.append(elapsed)
    return Loaded(handle, seconds, first_s, exported)


def engine_loader(registry: EngineRegistry, engine: str, spec: ModelSpec, home: Path) -> Callable[[], LoadedModel]:
    state = registry.state(engine)
    if state is None or state.engine is None or not state.probe.available:
        reason = state.probe.reason if state else "not installed"
        raise SystemExit(f"engine {engine} is unavailable: {reason}")
    return partial(state.engine.load, spec, "auto", home)


# ---------------------------------------------------------------- text generation


@dataclass
class Answer:
    text: str
    tokens: int


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    max_tokens: int


def story(max_tokens: int, session: int | None = None) -> GenerationRequest:
    """The story request; a `session` number in the system line makes each prompt differ from the
    previous one early, so llama.cpp's KV prefix reuse cannot skip the prompt when timing the first token."""
    system = SYSTEM if session is None else f"Session {session}. {SYSTEM}"
    return GenerationRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": STORY}],
        max_tokens=max_tokens,
        sampling=Sampling(temperature=0.0),
    )


class TextRunner(Protocol):
    label: str

    def prepare(self, request: GenerationRequest) -> Any: ...

    def first_text(self, prepared: Any) -> None: ...

    def answer(self, prepared: Any) -> Answer: ...


class RelayText:
    """inferrelay's TextModel.stream(), the path a server request takes; encoding is part of the timing."""

    label = "inferrelay"

    def __init__(self, model: TextModel) -> None:
        self.model = model

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        return request

    def first_text(self, request: GenerationRequest) -> None:
        next(piece for piece in self.model.stream(request) if piece.text)

    def answer(self, request: GenerationRequest) -> Answer:
        parts = list(self.model.stream(request))
        return Answer("".join(p.text for p in parts), parts[-1].completion_tokens)


class Peer:
    """A raw library fed the token ids that inferrelay's own encode() produced, so both see one prompt."""

    label = ""

    def __init__(self, encode: Callable[[GenerationRequest], list[int]]) -> None:
        self._encode = encode

    def prepare(self, request: GenerationRequest) -> Prompt:
        return Prompt(self._encode(request), request.max_tokens or 0)

    def close(self) -> None:
        """Release the model."""


class LlamaPeer(Peer):
    label = "llama-cpp-python create_completion"

    def __init__(self, spec: ModelSpec, home: Path, encode: Callable[[GenerationRequest], list[int]]) -> None:
        import llama_cpp

        super().__init__(encode)
        path = str(resolve_source(spec.source).path)
        self.llm = llama_cpp.Llama(path, n_ctx=spec.context_length, n_threads=os.cpu_count() or 1, verbose=False)

    def _complete(self, prompt: Prompt, stream: bool) -> Any:
        return self.llm.create_completion(
            prompt.ids, max_tokens=prompt.max_tokens, temperature=0.0, repeat_penalty=1.0, stream=stream
        )

    def first_text(self, prompt: Prompt) -> None:
        next(chunk for chunk in self._complete(prompt, stream=True) if chunk["choices"][0]["text"])

    def answer(self, prompt: Prompt) -> Answer:
        out = self._complete(prompt, stream=False)
        return Answer(out["choices"][0]["text"], out["usage"]["completion_tokens"])

    def close(self) -> None:
        self.llm.close()


class GenAIPeer(Peer):
    label = "onnxruntime-genai Generator"

    def __init__(self, spec: ModelSpec, home: Path, encode: Callable[[GenerationRequest], list[int]]) -> None:
        import onnxruntime_genai as og

        super().__init__(encode)
        folder = home / "cache" / f"onnx-decoder-{DECODER_PRECISION}-{resolve_source(spec.source).digest()}"
        self.og = og
        self.model = og.Model(str(folder))
        self.tokenizer = og.Tokenizer(self.model)
        eos = json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"]
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def _generator(self, prompt: Prompt) -> Any:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt.ids) + prompt.max_tokens, do_sample=False)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(prompt.ids)
        return generator

    def first_text(self, prompt: Prompt) -> None:
        generator = self._generator(prompt)
        stream = self.tokenizer.create_stream()
        while not generator.is_done():
            generator.generate_next_token()
            if stream.decode(int(generator.get_next_tokens()[0])):
                return

    def answer(self, prompt: Prompt) -> Answer:
        generator = self._generator(prompt)
        while not generator.is_done():
            generator.generate_next_token()
        new = [int(t) for t in generator.get_sequence(0)[len(prompt.ids) :] if int(t) not in self.eos]
        return Answer(self.tokenizer.decode(np.asarray(new, dtype=np.int32)), len(new))


class TransformersPeer(Peer):
    """transformers' generate(); its first-token figure is generate(max_new_tokens=1): prefill plus one step."""

    label = "transformers generate()"

    def __init__(self, spec: ModelSpec, home: Path, encode: Callable[[GenerationRequest], list[int]]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().__init__(encode)
        source = resolve_source(spec.source)
        where = {"pretrained_model_name_or_path": str(source.folder), "gguf_file": source.path.name}
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(**where)
        self.model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}

    def _generate(self, ids: list[int], max_new: int) -> list[int]:
        inputs = self.torch.tensor([ids])
        with self.torch.inference_mode():
            out = self.model.generate(
                inputs,
                attention_mask=self.torch.ones_like(inputs),
                max_new_tokens=max_new,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        return [t for t in out[0, len(ids) :].tolist() if t not in self.eos]

    def first_text(self, prompt: Prompt) -> None:
        self._generate(prompt.ids, 1)

    def answer(self, prompt: Prompt) -> Answer:
        new = self._generate(prompt.ids, prompt.max_tokens)
        return Answer(str(self.tokenizer.decode(new, skip_special_tokens=True)), len(new))


TEXT_PEERS: dict[str, type[LlamaPeer | GenAIPeer | TransformersPeer]] = {
    "llamacpp": LlamaPeer,
    "onnx": GenAIPeer,
    "torch": TransformersPeer,
}


@dataclass
class TextRow:
    engine: str
    runner: str
    load_s: float
    first_load_s: float
    exported_on_first_load: bool
    ttft_ms: float
    tokens_per_s: float
    tokens: int
    max_tokens: int
    stopped_early: bool
    same_text_as_peer: bool | None
    text: str
    load_runs_s: list[float]
    ttft_runs_ms: list[float]
    answer_runs_s: list[float]


def measure_text(engine: str, runner: TextRunner, loaded: Loaded, plan: Plan) -> TextRow:
    runner.first_text(runner.prepare(story(plan.max_tokens, session=-1)))  # warm-up, untimed
    ttft, _ = repeat_timed(
        lambda i: partial(runner.first_text, runner.prepare(story(plan.max_tokens, i))), plan.repeats
    )
    request = runner.prepare(story(plan.max_tokens))
    total, answer = repeat_timed(lambda _: partial(runner.answer, request), plan.repeats)
    return TextRow(
        engine=engine,
        runner=runner.label,
        load_s=loaded.load_s,
        first_load_s=loaded.first_load_s,
        exported_on_first_load=loaded.exported,
        ttft_ms=statistics.median(ttft) * 1000,
        tokens_per_s=answer.tokens / statistics.median(total),
        tokens=answer.tokens,
        max_tokens=plan.max_tokens,
        stopped_early=answer.tokens < plan.max_tokens,
        same_text_as_peer=None,
        text=answer.text,
        load_runs_s=loaded.load_runs_s,
        ttft_runs_ms=[t * 1000 for t in ttft],
        answer_runs_s=total,
    )


def bench_text(registry: EngineRegistry, spec: ModelSpec, home: Path, engine: str, plan: Plan) -> list[TextRow]:
    """inferrelay first (it builds any cached artifact the peer reads), then the peer."""
    relay = load_repeatedly(engine_loader(registry, engine, spec, home), plan.repeats, home)
    model: TokenTextModel = relay.handle
    peer = load_repeatedly(partial(TEXT_PEERS[engine], spec, home, model.encode), plan.repeats, home)
    rows = [measure_text(engine, RelayText(model), relay, plan), measure_text(engine, peer.handle, peer, plan)]
    rows[0].same_text_as_peer = rows[0].text == rows[1].text
    model.close()
    peer.handle.close()
    return rows


# ---------------------------------------------------------------- embeddings


def sentences(count: int) -> list[str]:
    """Deterministic, varied sentences of 5 to 40 words."""
    draw = random.Random(0)
    words = WORDS.split()
    made = (" ".join(draw.choices(words, k=draw.randint(5, 40))) for _ in range(count))
    return [text.capitalize() + "." for text in made]


class Embedder(Protocol):
    label: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


class RelayEmbedder:
    label = "inferrelay"

    def __init__(self, model: EmbeddingModel) -> None:
        self.model = model

    def encode(self, texts: list[str]) -> np.ndarray:
        return embed_sorted(self.model, texts, BATCH).vectors


class SentenceTransformersPeer:
    label = "sentence-transformers encode"

    def __init__(self, spec: ModelSpec) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(resolve_source(spec.source).path), device="cpu")

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, batch_size=BATCH, convert_to_numpy=True), dtype=np.float32)

    def close(self) -> None:
        """Nothing beyond the Python object."""


@dataclass
class EmbedRow:
    engine: str
    runner: str
    load_s: float
    first_load_s: float
    exported_on_first_load: bool
    sentences: int
    sentences_per_s: float
    ratio_to_peer: float | None
    min_cosine_to_peer: float | None
    load_runs_s: list[float]
    runs_s: list[float]


def measure_embed(
    engine: str, embedder: Embedder, loaded: Loaded, texts: list[str], repeats: int
) -> tuple[EmbedRow, np.ndarray]:
    embedder.encode(texts[:BATCH])  # warm-up, untimed
    seconds, vectors = repeat_timed(lambda _: partial(embedder.encode, texts), repeats)
    row = EmbedRow(
        engine=engine,
        runner=embedder.label,
        load_s=loaded.load_s,
        first_load_s=loaded.first_load_s,
        exported_on_first_load=loaded.exported,
        sentences=len(texts),
        sentences_per_s=len(texts) / statistics.median(seconds),
        ratio_to_peer=None,
        min_cosine_to_peer=None,
        load_runs_s=loaded.load_runs_s,
        runs_s=seconds,
    )
    return row, vectors


def compare(row: EmbedRow, vectors: np.ndarray, peer: EmbedRow, peer_vectors: np.ndarray) -> EmbedRow:
    row.ratio_to_peer = row.sentences_per_s / peer.sentences_per_s
    unit = peer_vectors / np.linalg.norm(peer_vectors, axis=1, keepdims=True)
    row.min_cosine_to_peer = float(np.min(np.sum(vectors * unit, axis=1)))
    return row


def bench_embeddings(registry: EngineRegistry, spec: ModelSpec, home: Path, plan: Plan) -> list[EmbedRow]:
    texts = sentences(plan.sentences)
    peer = load_repeatedly(partial(SentenceTransformersPeer, spec), plan.repeats, home)
    peer_row, peer_vectors = measure_embed("peer", peer.handle, peer, texts, plan.repeats)
    rows = [peer_row]
    for engine in EMBED_ENGINES:
        name, _, mode = engine.partition("+")
        options = {**spec.engine_options, "torch": {"compile": mode == "compile"}}
        one = spec.model_copy(update={"engine_options": options})
        loaded = load_repeatedly(engine_loader(registry, name, one, home), plan.repeats, home)
        row, vectors = measure_embed(engine, RelayEmbedder(loaded.handle), loaded, texts, plan.repeats)
        rows.append(compare(row, vectors, peer_row, peer_vectors))
        loaded.handle.close()
    return rows


# ---------------------------------------------------------------- report


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor()


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def revision() -> str:
    """The checkout's commit, with +dirty when inferrelay/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "inferrelay"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    return {
        "inferrelay_revision": revision(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": {name: installed(name) for name in LIBRARIES},
    }


Column = tuple[str, Callable[[Any], object]]


def markdown_table(rows: Sequence[Any], columns: Sequence[Column]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(get(row)) for _, get in columns) + " |" for row in rows]
    return "\n".join(lines)


def yes_no(flag: bool | None) -> str | None:
    return None if flag is None else ("yes" if flag else "no")


LOAD_COLUMNS: list[Column] = [
    ("engine", lambda r: r.engine),
    ("runner", lambda r: r.runner),
    ("load s (median)", lambda r: r.load_s),
    ("first load s", lambda r: r.first_load_s),
    ("ONNX export in first load", lambda r: yes_no(r.exported_on_first_load)),
]

TEXT_COLUMNS: list[Column] = [
    *LOAD_COLUMNS,
    ("TTFT ms", lambda r: r.ttft_ms),
    ("tok/s", lambda r: r.tokens_per_s),
    ("tokens", lambda r: f"{r.tokens}/{r.max_tokens}" + (" (stopped early)" if r.stopped_early else "")),
    ("same text as peer", lambda r: yes_no(r.same_text_as_peer)),
]

EMBED_COLUMNS: list[Column] = [
    *LOAD_COLUMNS,
    ("sentences/s", lambda r: r.sentences_per_s),
    ("× sentence-transformers", lambda r: r.ratio_to_peer),
    ("min cosine to ST", lambda r: None if r.min_cosine_to_peer is None else f"{r.min_cosine_to_peer:.6f}"),
]

RATIO_COLUMNS: list[Column] = [
    ("engine", lambda pair: pair[0].engine),
    ("peer", lambda pair: pair[1].runner),
    ("load ×peer", lambda pair: pair[0].load_s / pair[1].load_s),
    ("TTFT ×peer", lambda pair: pair[0].ttft_ms / pair[1].ttft_ms),
    ("tok/s ×peer", lambda pair: pair[0].tokens_per_s / pair[1].tokens_per_s),
]


def report(text: list[TextRow], embeddings: list[EmbedRow]) -> str:
    pairs = list(zip(text[::2], text[1::2], strict=True))
    return "\n\n".join(
        [
            "## Text generation (SmolLM2-135M-Instruct, greedy)",
            markdown_table(text, TEXT_COLUMNS),
            "## inferrelay ÷ raw library (time ratios above 1 and tok/s ratios below 1 mean inferrelay is slower)",
            markdown_table(pairs, RATIO_COLUMNS),
            "## Embeddings (all-MiniLM-L6-v2)",
            markdown_table(embeddings, EMBED_COLUMNS),
        ]
    )


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return path


def model_spec(settings: Settings, name: str) -> ModelSpec:
    spec = settings.model(name)
    if spec is None:
        raise SystemExit(f"model {name} is not configured")
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="INFERRELAY_HOME; its ONNX cache is reused")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer sentences and tokens, one repeat: a smoke run (writes engines-quick.json)",
    )
    parser.add_argument("--only", choices=["text", "embeddings"], help="one half of the benchmark")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    plan = QUICK if args.quick else FULL
    settings = load_settings(None, args.home)
    registry = EngineRegistry.discover()
    text_spec, embed_spec = model_spec(settings, TEXT_MODEL), model_spec(settings, EMBED_MODEL)
    text = [
        row
        for engine in (TEXT_ENGINES if args.only != "embeddings" else ())
        for row in bench_text(registry, text_spec, args.home, engine, plan)
    ]
    embeddings = bench_embeddings(registry, embed_spec, args.home, plan) if args.only != "text" else []
    print(report(text, embeddings))
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "home": str(args.home),
        "plan": asdict(plan),
        "machine": machine(),
        "text": [asdict(row) for row in text],
        "embeddings": [asdict(row) for row in embeddings],
    }
    name = "engines-quick.json" if args.quick else "engines.json"  # a smoke run leaves the full figures alone
    if args.only:
        name = name.replace(".json", f"-{args.only}.json")
    print(f"\nwrote {write_json(name, payload)}")


if __name__ == "__main__":
    main()
