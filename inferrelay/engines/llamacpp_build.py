"""Which CPU instructions the installed llama.cpp build was compiled for, without loading a model.

A build made with GGML_NATIVE=ON carries every instruction of the CPU it was built on (AVX-512, AMX) and
dies with SIGILL where those trap. `make` builds a portable baseline instead (docs/engines.md); this says
which build is installed, from `llama_cpp.llama_print_system_info()`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

# x86 instruction sets ggml reports, in the order it reports them; SSE3/SSSE3 are implied by all of them.
X86_ISA = ("AVX", "AVX_VNNI", "AVX2", "F16C", "FMA", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
           "AVX512_BF16", "AMX_INT8")  # fmt: skip
PORTABLE_BASELINE = frozenset({"AVX", "AVX2", "FMA", "F16C"})  # any x86-64-v3 CPU (Haswell, Zen 1 and later)
BEYOND_BASELINE = frozenset({"AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8"})
ARM_ISA = ("NEON", "ARM_FMA", "FP16_VA", "MATMUL_INT8", "SVE", "DOTPROD", "SME", "SME2")


@dataclass(frozen=True)
class LlamaCppBuild:
    """The CPU backend's compiled-in instruction sets, and the other backends of the build (CUDA, Metal...)."""

    cpu_features: frozenset[str]
    backends: tuple[str, ...] = ("CPU",)

    @property
    def beyond_baseline(self) -> list[str]:
        """Instructions a CPU must have beyond the baseline, or this build crashes there (SIGILL)."""
        return [name for name in X86_ISA if name in self.cpu_features & BEYOND_BASELINE]

    @property
    def x86(self) -> bool:
        return bool(self.cpu_features & {"SSE3", "SSSE3", *X86_ISA})

    @property
    def portable(self) -> bool:
        """The x86-64 baseline `make` builds: AVX2, FMA, F16C, and nothing a newer CPU adds."""
        return self.x86 and self.cpu_features >= PORTABLE_BASELINE and not self.beyond_baseline

    def describe(self) -> str:
        """One line, e.g. 'cpu: AVX AVX2 F16C FMA BMI2 (portable baseline)'."""
        isa = [name for name in (*X86_ISA, *ARM_ISA) if name in self.cpu_features]
        if self.beyond_baseline:
            verdict = f"not portable: needs {', '.join(self.beyond_baseline)}; SIGILL where missing or trapping"
        elif self.portable:
            verdict = "portable baseline"
        elif self.x86:
            verdict = f"below the baseline: no {', '.join(sorted(PORTABLE_BASELINE - self.cpu_features))}, slower"
        else:
            verdict = "not x86" if isa else "no SIMD, slow"
        others = [b for b in self.backends if b != "CPU"]
        return f"cpu: {' '.join(isa) or '-'} ({verdict})" + (f"; also {', '.join(others)}" if others else "")


def parse_system_info(info: bytes | str) -> LlamaCppBuild:
    """Parse 'CPU : SSE3 = 1 | AVX = 1 | ... | CUDA : ARCHS = 890 | ...' (one section per backend)."""
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else info
    backends: list[str] = []
    cpu: set[str] = set()
    current = ""
    for field in (part.strip() for part in text.split("|")):
        if " : " in field:  # a new backend section starts: "CPU : SSE3 = 1"
            current, field = (s.strip() for s in field.split(" : ", 1))
            backends.append(current)
        name, _, value = (s.strip() for s in field.partition("="))
        if current == "CPU" and name and value not in ("0", ""):
            cpu.add(name)
    return LlamaCppBuild(frozenset(cpu), tuple(backends) or ("CPU",))


def installed_build() -> LlamaCppBuild | None:
    """The installed llama.cpp build; None when llama_cpp is absent or does not load."""
    try:
        llama_cpp = importlib.import_module("llama_cpp")
        return parse_system_info(llama_cpp.llama_print_system_info())
    except Exception:  # absent, or a broken install: the engine's probe says which and how to fix it
        return None


def describe_installed() -> str | None:
    build = installed_build()
    return None if build is None else build.describe()
