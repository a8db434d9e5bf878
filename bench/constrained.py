"""What constrained decoding (a JSON schema, through llguidance) costs each local engine, in one run on one machine.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/constrained.py [--engines llamacpp,onnx,torch] [--rounds 3]

Per engine, SmolLM2-135M greedy on the CPU, the same chat asked with and without a JSON schema (three people,
a forced list of about 100 tokens), up to 160 tokens: tokens/s over the whole request, decode
tokens/s after the first token, and time to first token (a constrained one includes compiling the grammar). The
two alternate round by round so drift hits both; the best round is kept. The first constrained request of a
loaded model also builds llguidance's tokenizer: `first_constrained_ms` is that one. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from inferrelay.config.embedded import SMOLLM2
from inferrelay.engines import constrained
from inferrelay.engines.base import Constraint, GenerationRequest, Sampling, TextModel
from inferrelay.engines.registry import EngineRegistry

RESULTS = Path(__file__).parent / "results" / "constrained.json"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 20},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
SCHEMA = {
    "type": "object",
    "properties": {"people": {"type": "array", "items": PERSON, "minItems": 3, "maxItems": 3}},
    "required": ["people"],
    "additionalProperties": False,
}
CHAT = [{"role": "user", "content": "List three people with their name, age and city, as JSON."}]
MAX_TOKENS = 160
LIBRARIES = ("llguidance", "llama-cpp-python", "onnxruntime-genai", "torch", "transformers")


def request(constrained: bool) -> GenerationRequest:
    constraint = Constraint("json_schema", SCHEMA) if constrained else None
    return GenerationRequest(messages=CHAT, max_tokens=MAX_TOKENS, sampling=Sampling(0.0), constraint=constraint)


def figures(model: TextModel, constrained: bool) -> dict[str, float]:
    start = time.perf_counter()
    first = 0.0
    tokens = 0
    for piece in model.stream(request(constrained)):
        if not first and piece.text:
            first = time.perf_counter() - start
        tokens = piece.completion_tokens or tokens
    seconds = time.perf_counter() - start
    return {
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2),
        "decode_tokens_per_s": round((tokens - 1) / max(seconds - first, 1e-9), 2),
        "ttft_ms": round(first * 1000, 1),
    }


class GuideClock:
    """Time spent in llguidance's steps (mask, advance) on the llamacpp and torch engines; onnx's run inside
    onnxruntime-genai, out of reach. Robust to a busy machine where whole-request figures are not."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.steps = 0
        for name in ("allowed", "advance"):
            original = getattr(constrained.TokenGuide, name)
            setattr(constrained.TokenGuide, name, self._timed(original, count=name == "advance"))

    def _timed(self, original: Any, count: bool) -> Any:
        def timed(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args)
            finally:
                self.seconds += time.perf_counter() - start
                self.steps += count

        return timed

    def per_token_ms(self) -> float | None:
        return round(self.seconds / self.steps * 1000, 3) if self.steps else None


def best(rounds: list[dict[str, float]]) -> dict[str, float]:
    return max(rounds, key=lambda r: r["decode_tokens_per_s"])


def measure(engine: str, home: Path, rounds: int, clock: GuideClock) -> dict[str, Any]:
    state = EngineRegistry.discover().state(engine)
    if state is None or state.engine is None:
        return {"skipped": state.probe.reason if state else "not registered"}
    model = state.engine.load(SMOLLM2, "cpu", home)
    assert isinstance(model, TextModel)
    clock.seconds, clock.steps = 0.0, 0
    figures(model, False)  # warm-up
    start = time.perf_counter()
    first = model.generate(request(True))
    first_ms = round((time.perf_counter() - start) * 1000, 1)
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "json_schema": []}
    for _ in range(rounds):
        runs["plain"].append(figures(model, False))
        runs["json_schema"].append(figures(model, True))
    plain, schema = best(runs["plain"]), best(runs["json_schema"])
    model.close()
    return {
        "plain": plain,
        "json_schema": schema,
        "decode_ratio": round(schema["decode_tokens_per_s"] / plain["decode_tokens_per_s"], 3),
        "first_constrained_ms": first_ms,
        "llguidance_ms_per_token": clock.per_token_ms(),
        "answer_is_valid_json": _parses(first.text),
    }


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="llamacpp,onnx,torch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--home", type=Path, default=None, help="INFERRELAY_HOME with cached ONNX exports")
    args = parser.parse_args()
    home = args.home or Path(os.environ.get("INFERRELAY_TEST_HOME", Path(tempfile.gettempdir()) / "inferrelay"))
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {name: _version(name) for name in LIBRARIES},
        "model": SMOLLM2.name,
        "max_tokens": MAX_TOKENS,
        "rounds": args.rounds,
        "engines": {},
    }
    clock = GuideClock()
    for engine in args.engines.split(","):
        results["engines"][engine] = measure(engine, home, args.rounds, clock)
        print(engine, json.dumps(results["engines"][engine]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
