"""The llama.cpp build line, parsed from real `llama_print_system_info()` strings; the installed build is portable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from inferrelay.engines.llamacpp import LlamaCppEngine
from inferrelay.engines.llamacpp_build import installed_build, parse_system_info
from inferrelay.engines.onnx import OnnxEngine

# llama-cpp-python 0.3.36 built with GGML_NATIVE=ON on a Sapphire Rapids VM (the build that died with SIGILL)
NATIVE = (
    b"CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    b"AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
    b"OPENMP = 1 | REPACK = 1 | "
)
# the same version built by `make` (the portable baseline)
PORTABLE = (
    b"CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | "
    b"OPENMP = 1 | REPACK = 1 | "
)
# a CUDA build, whose backends come before the CPU's
CUDA = (
    "CUDA : ARCHS = 500,610,700,750,800,860,890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | "
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | "
    "OPENMP = 1 | REPACK = 1 | "
)
# an Apple M-series build
ARM = "Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | ACCELERATE = 1 | "


def test_the_portable_build_is_the_baseline() -> None:
    build = parse_system_info(PORTABLE)
    assert build.portable
    assert build.beyond_baseline == []
    assert build.describe() == "cpu: AVX AVX2 F16C FMA BMI2 (portable baseline)"


def test_a_native_build_lists_what_a_cpu_must_have() -> None:
    build = parse_system_info(NATIVE)
    assert not build.portable
    assert build.beyond_baseline == ["AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8"]
    line = build.describe()
    assert line.startswith("cpu: AVX AVX_VNNI AVX2 ")
    assert "not portable" in line
    assert "AMX_INT8" in line
    assert "SIGILL" in line


def test_other_backends_and_other_architectures() -> None:
    cuda = parse_system_info(CUDA)
    assert cuda.backends == ("CUDA", "CPU")
    assert "ARCHS" not in cuda.cpu_features  # the CUDA section's fields are not CPU features
    assert cuda.portable
    assert cuda.describe() == "cpu: AVX AVX2 F16C FMA BMI2 (portable baseline); also CUDA"
    arm = parse_system_info(ARM)
    assert not arm.x86
    assert not arm.portable
    assert arm.describe() == "cpu: NEON ARM_FMA FP16_VA DOTPROD (not x86); also Metal"
    old = parse_system_info("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | LLAMAFILE = 1 | ")
    assert "below the baseline: no AVX2, F16C, FMA" in old.describe()
    assert parse_system_info("").describe() == "cpu: - (no SIMD, slow)"


def test_an_engine_without_a_build_line() -> None:
    assert OnnxEngine.build() is None


def test_the_installed_build_uses_no_avx512_or_amx() -> None:
    pytest.importorskip("llama_cpp")
    build = installed_build()
    assert build is not None
    assert build.beyond_baseline == [], f"{build.describe()}: rebuild with `make` (docs/engines.md)"
    assert build.portable
    assert LlamaCppEngine.build() == build.describe()


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_the_installed_cpu_library_holds_no_avx512_or_amx_instruction() -> None:
    """The system info reports compile-time macros; the disassembly is the truth (a zmm register is AVX-512)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    libraries = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu*.so"))
    assert libraries
    for library in libraries:
        code = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True)
        assert code.returncode == 0, code.stderr
        bad = [line for line in code.stdout.splitlines() if "zmm" in line or "tilezero" in line or "tdpb" in line]
        assert bad == [], f"{library.name}: {len(bad)} AVX-512/AMX instructions, e.g. {bad[:3]}"
