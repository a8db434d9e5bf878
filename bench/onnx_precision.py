"""SmolLM2's ONNX decoder built at int4, int8 and fp32: answers, size and speed side by side.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/onnx_precision.py [--home DIR]

Each precision is built once with `python -m inferrelay.engines.onnx_export decoder
GGUF OUT --precision P` into HOME/cache/onnx-decoder-P-<source hash> (int8 is the
folder the onnx engine itself uses) and run through inferrelay's GenAIDecoder.
The torch and llamacpp engines answer the same questions as references: torch
runs the same dequantized fp32 weights, llama.cpp the Q4_1 GGUF itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import cast

from engines import (
    DEFAULT_HOME,
    SYSTEM,
    TEXT_MODEL,
    engine_loader,
    machine,
    markdown_table,
    model_spec,
    repeat_timed,
    timed,
    write_json,
)

from inferrelay.config.loading import load_settings
from inferrelay.config.schema import ModelSpec
from inferrelay.config.sources import ModelSource, resolve_source
from inferrelay.engines.artifacts import cached_artifact
from inferrelay.engines.base import GenerationRequest, Piece, Sampling, TextModel
from inferrelay.engines.onnx import GenAIDecoder
from inferrelay.engines.registry import EngineRegistry

PRECISIONS = ("int4", "int8", "fp32")
REFERENCE = "onnx fp32"
REFERENCE_ENGINES = ("torch", "llamacpp")
MAX_TOKENS = 40
QUESTIONS = (
    "What is the capital of France?",
    "What is 2+2?",
    "Name three colors.",
    "What is the largest planet in the solar system?",
    "Who wrote Romeo and Juliet?",
)


@dataclass
class Result:
    label: str
    size_mb: float | None
    built_s: float | None
    tokens_per_s: float
    answers: list[str]
    tokens: list[int]
    equal_to_reference: list[bool] = field(default_factory=list)
    words_shared_with_reference: list[int] = field(default_factory=list)


def build(home: Path, source: ModelSource, precision: str) -> tuple[Path, float | None]:
    """The cached export for `precision`, and how long building it took (None when it was cached)."""

    def export(out: Path) -> None:
        command = [sys.executable, "-m", "inferrelay.engines.onnx_export", "decoder", str(source.path), str(out)]
        done = subprocess.run([*command, "--precision", precision], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{precision} export failed:\n{done.stderr[-2000:]}")

    kind = f"onnx-decoder-{precision}"
    cached = (home / "cache" / f"{kind}-{source.digest()}").is_dir()
    seconds, folder = timed(lambda: cached_artifact(home, kind, source, export))
    return folder, None if cached else seconds


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def ask(model: TextModel, question: str) -> Piece:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    greedy = Sampling(temperature=0.0)
    return model.generate(GenerationRequest(messages=messages, max_tokens=MAX_TOKENS, sampling=greedy))


def sweep(label: str, model: TextModel, repeats: int, size_mb: float | None, built_s: float | None) -> Result:
    """Every question once per repeat; tokens/s over the median sweep."""
    ask(model, QUESTIONS[0])  # warm-up, untimed
    seconds, pieces = repeat_timed(lambda _: lambda: [ask(model, q) for q in QUESTIONS], repeats)
    tokens = [p.completion_tokens for p in pieces]
    answers = [p.text for p in pieces]
    return Result(label, size_mb, built_s, sum(tokens) / statistics.median(seconds), answers, tokens)


def run_precision(home: Path, spec: ModelSpec, precision: str, repeats: int) -> Result:
    folder, built_s = build(home, resolve_source(spec.source), precision)
    return sweep(f"onnx {precision}", GenAIDecoder(folder, spec), repeats, folder_mb(folder), built_s)


def run_engine(registry: EngineRegistry, home: Path, spec: ModelSpec, engine: str, repeats: int) -> Result:
    model = cast(TextModel, engine_loader(registry, engine, spec, home)())
    try:
        return sweep(f"{engine} engine", model, repeats, None, None)
    finally:
        model.close()


def shared_words(answer: str, reference: str) -> int:
    """How many leading words two answers have in common before they diverge."""
    count = 0
    for mine, theirs in zip(answer.split(), reference.split(), strict=False):
        if mine != theirs:
            break
        count += 1
    return count


def compare(results: list[Result]) -> None:
    reference = next(r for r in results if r.label == REFERENCE)
    for result in results:
        pairs = list(zip(result.answers, reference.answers, strict=True))
        result.equal_to_reference = [a == b for a, b in pairs]
        result.words_shared_with_reference = [shared_words(a, b) for a, b in pairs]


def one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def shared_cell(result: Result) -> str:
    return "(reference)" if result.label == REFERENCE else ", ".join(map(str, result.words_shared_with_reference))


def answer_cell(result: Result, question: int) -> str:
    if result.label == REFERENCE:
        return one_line(result.answers[question])
    return one_line(result.answers[question]) + (" (=)" if result.equal_to_reference[question] else " (≠)")


def report(results: list[Result]) -> str:
    summary = markdown_table(
        results,
        [
            ("model", lambda r: r.label),
            ("size on disk MB", lambda r: r.size_mb),
            ("tok/s", lambda r: r.tokens_per_s),
            (f"answers equal to {REFERENCE}", lambda r: f"{sum(r.equal_to_reference)}/{len(QUESTIONS)}"),
            (f"leading words shared with {REFERENCE}, per question", shared_cell),
            ("built this run (s)", lambda r: r.built_s),
        ],
    )
    answers = markdown_table(
        range(len(QUESTIONS)),
        [("question", QUESTIONS.__getitem__)] + [(r.label, partial(answer_cell, r)) for r in results],
    )
    title = f"## SmolLM2 greedy answers, {MAX_TOKENS} tokens: ONNX decoder by precision, other engines for reference"
    note = f"(=) / (≠): the answer equals / differs from {REFERENCE}'s."
    return f"{title}\n\n{summary}\n\n{answers}\n\n{note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="INFERRELAY_HOME; exports are cached there")
    parser.add_argument("--repeats", type=int, default=3, help="timed sweeps over the questions; the median counts")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    spec = model_spec(load_settings(None, args.home), TEXT_MODEL)
    registry = EngineRegistry.discover()
    results = [run_precision(args.home, spec, p, args.repeats) for p in PRECISIONS]
    results += [run_engine(registry, args.home, spec, e, args.repeats) for e in REFERENCE_ENGINES]
    compare(results)
    print(report(results))
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "home": str(args.home),
        "max_tokens": MAX_TOKENS,
        "system": SYSTEM,
        "questions": list(QUESTIONS),
        "reference": REFERENCE,
        "machine": machine(),
        "results": [asdict(r) for r in results],
    }
    print(f"\nwrote {write_json('onnx_precision.json', payload)}")


if __name__ == "__main__":
    main()
