"""Each library's own greedy answer to a request, for tests to compare an engine's answer with.

The embedded SmolLM2's greedy wording changes with the build (AVX2 or AVX-512 llama.cpp, another
onnxruntime) while staying correct, so no test asserts on it: a test asks the library itself, on the
same build and input, and expects inferrelay to hand back exactly that answer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from inferrelay.config.embedded import SMOLLM2
from inferrelay.config.sources import resolve_source


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def fresh_llama() -> Any:
    """A new `Llama` with the llamacpp engine's settings: one that never answered, so has no KV prefix to reuse."""
    from llama_cpp import Llama

    path = resolve_source(SMOLLM2.source).path
    return Llama(model_path=str(path), n_ctx=SMOLLM2.context_length, n_threads=os.cpu_count() or 1, verbose=False)


def llama_cpp_chat(messages: list[dict[str, str]], max_tokens: int) -> Answer:
    """llama-cpp-python's `create_chat_completion` at temperature 0, from a fresh `Llama`."""
    return _llama_cpp_chat(json.dumps(messages), max_tokens)


def llama_cpp_completion(prompt: str, max_tokens: int) -> Answer:
    """llama-cpp-python's `create_completion` at temperature 0, from a fresh `Llama`."""
    return _llama_cpp_completion(prompt, max_tokens)


@cache
def _llama_cpp_chat(messages: str, max_tokens: int) -> Answer:
    llm = fresh_llama()
    try:
        return _from_openai(llm.create_chat_completion(json.loads(messages), temperature=0, max_tokens=max_tokens))
    finally:
        llm.close()


@cache
def _llama_cpp_completion(prompt: str, max_tokens: int) -> Answer:
    llm = fresh_llama()
    try:
        return _from_openai(llm.create_completion(prompt, temperature=0, max_tokens=max_tokens))
    finally:
        llm.close()


def _from_openai(reply: Any) -> Answer:
    choice = reply["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    usage = reply["usage"]
    return Answer(text, choice["finish_reason"], usage["prompt_tokens"], usage["completion_tokens"])


def transformers_chat(messages: list[dict[str, str]], max_tokens: int) -> Answer:
    """transformers' `generate` without sampling, on the GGUF dequantized to float32 as the torch engine loads it."""
    import torch
    import transformers

    from inferrelay.engines.torch import from_pretrained_args

    kwargs = from_pretrained_args(resolve_source(SMOLLM2.source))
    tokenizer = transformers.AutoTokenizer.from_pretrained(**kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(**kwargs, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    eos = model.generation_config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    inputs = torch.tensor([list(ids)])
    with torch.inference_mode():
        out = model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            do_sample=False,
            max_new_tokens=max_tokens,
            eos_token_id=sorted(stops),
            pad_token_id=tokenizer.eos_token_id,
        )
    return _ending(out[0, inputs.shape[1] :].tolist(), stops, max_tokens, len(ids), tokenizer.decode)


def onnx_genai_chat(home: Path, messages: list[dict[str, str]], max_tokens: int) -> Answer:
    """onnxruntime-genai's greedy search on the onnx engine's cached export under `home` (the engine builds it)."""
    import onnxruntime_genai as og

    from inferrelay.engines.onnx_export import DECODER_PRECISION

    folder = home / "cache" / f"onnx-decoder-{DECODER_PRECISION}-{resolve_source(SMOLLM2.source).digest()}"
    assert folder.is_dir(), f"no ONNX export at {folder}: load the model through the onnx engine first"
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.encode(tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + max_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
    eos = json.loads((folder / "genai_config.json").read_text())["model"]["eos_token_id"]
    stops = set(eos if isinstance(eos, list) else [eos])
    new = [int(t) for t in generator.get_sequence(0)[len(ids) :]]
    return _ending(new, stops, max_tokens, len(ids), lambda t: str(tokenizer.decode(np.asarray(t, dtype=np.int32))))


def _ending(new: list[int], stops: set[int], max_tokens: int, prompt_tokens: int, decode: Any) -> Answer:
    """An OpenAI-style answer from generated ids: an end-of-generation token ends it and is not counted."""
    stopped = bool(new) and new[-1] in stops
    tokens = new[:-1] if stopped else new
    finish = "stop" if stopped or len(tokens) < max_tokens else "length"
    return Answer(str(decode(tokens)), finish, prompt_tokens, len(tokens))
