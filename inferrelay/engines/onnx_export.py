"""Build ONNX artifacts from a model's own weights; run as a subprocess by the onnx engine.

    python -m inferrelay.engines.onnx_export decoder SOURCE OUT [--precision int8]
    python -m inferrelay.engines.onnx_export encoder SOURCE OUT [--precision fp32|int8]

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
ENCODER_VERSION = "v2"
"""Part of the encoder cache's name: v2 exports eager attention (4% faster on CPU than v1's SDPA graph)."""
ENCODER_PRECISIONS = ("fp32", "int8")


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


def export_encoder(source: Path, out: Path, precision: str = "fp32") -> None:
    """The transformer plus mean pooling and L2 normalisation, as sentence-transformers does.

    Eager attention exports as plain MatMul/Softmax, which ONNX Runtime runs
    faster on a CPU than the SDPA graph (and than its own fused Attention
    kernel, measured in docs/batch.md). int8 quantises the weights of every
    MatMul per channel: about 1.9x the speed, at a cosine to the fp32 vectors
    of 0.98 or more (docs/batch.md); it is chosen with `dtype: int8`.
    """
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
    encoder = AutoModel.from_pretrained(source, attn_implementation="eager").eval()
    sample = tokenizer(["a short one", "and a somewhat longer sentence"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in names} | {"embedding": {0: "batch"}}
    exported = out / ("model-fp32.onnx" if precision == "int8" else "model.onnx")
    torch.onnx.export(
        PooledEncoder(encoder),
        tuple(sample[name] for name in names),
        str(exported),
        input_names=names,
        output_names=["embedding"],
        dynamic_axes=axes,
        opset_version=ENCODER_OPSET,
        dynamo=False,
    )
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(exported, out / "model.onnx", weight_type=QuantType.QInt8, per_channel=True)
        exported.unlink()
    for name in ("tokenizer.json", "config.json", "sentence_bert_config.json"):
        if (source / name).exists():
            shutil.copy2(source / name, out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["decoder", "encoder"])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--precision", choices=["int4", "int8", "fp16", "fp32"], help="decoder: int8, encoder: fp32")
    args = parser.parse_args()
    if args.what == "encoder" and args.precision not in (None, *ENCODER_PRECISIONS):
        parser.error(f"an encoder exports as {' or '.join(ENCODER_PRECISIONS)}, not {args.precision}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "decoder":
        export_decoder(args.source, args.out, args.precision or DECODER_PRECISION)
    else:
        export_encoder(args.source, args.out, args.precision or "fp32")


if __name__ == "__main__":
    main()
