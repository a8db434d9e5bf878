"""Build ONNX artifacts from a model's own weights; run as a subprocess by the onnx engine.

    python -m inferrelay.engines.onnx_export decoder SOURCE OUT [--precision int8]
    python -m inferrelay.engines.onnx_export encoder SOURCE OUT

A separate process keeps torch and the export's peak memory out of the server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DECODER_PRECISION = "int8"
"""int8 stays on fp32's greedy answers far longer than int4 at 2.3x fp32's speed (docs/engines.md)."""

ENCODER_OPSET = 17


def export_decoder(source: Path, out: Path, precision: str) -> None:
    """A GGUF is dequantized through transformers first; the genai builder then quantizes."""
    with tempfile.TemporaryDirectory(prefix="inferrelay-hf-") as scratch:
        hf_folder = _gguf_to_hf(source, Path(scratch) / "hf") if source.is_file() else source
        subprocess.run(
            [
                sys.executable,
                "-m",
                "onnxruntime_genai.models.builder",
                "-i", str(hf_folder),
                "-o", str(out),
                "-p", precision,
                "-e", "cpu",
                "-c", str(Path(scratch) / "builder-cache"),
            ],
            check=True,
            stdout=sys.stderr,
        )  # fmt: skip


def _gguf_to_hf(gguf: Path, folder: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None  # type: ignore[assignment]  # weights are dequantized to float; save them as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def export_encoder(source: Path, out: Path) -> None:
    """The transformer plus mean pooling and L2 normalisation, as sentence-transformers does."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from inferrelay.engines.pooling import mean_pool_normalized

    class PooledEncoder(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            return mean_pool_normalized(hidden, attention_mask)

    tokenizer = AutoTokenizer.from_pretrained(source)
    encoder = AutoModel.from_pretrained(source).eval()
    sample = tokenizer(["a short one", "and a somewhat longer sentence"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in names} | {"embedding": {0: "batch"}}
    torch.onnx.export(
        PooledEncoder(encoder),
        tuple(sample[name] for name in names),
        str(out / "model.onnx"),
        input_names=names,
        output_names=["embedding"],
        dynamic_axes=axes,
        opset_version=ENCODER_OPSET,
        dynamo=False,
    )
    for name in ("tokenizer.json", "config.json", "sentence_bert_config.json"):
        if (source / name).exists():
            shutil.copy2(source / name, out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["decoder", "encoder"])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--precision", default=DECODER_PRECISION, choices=["int4", "int8", "fp16", "fp32"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "decoder":
        export_decoder(args.source, args.out, args.precision)
    else:
        export_encoder(args.source, args.out)


if __name__ == "__main__":
    main()
