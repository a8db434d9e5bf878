"""How foreign exceptions become kinds: one table, matched by class name and message, never by importing.

Each rule names exception classes (anywhere in the exception's class
hierarchy, so a library's subclass matches its base), or the package the
class comes from, or a pattern in "Type: message"; the first rule that
matches gives the kind and the hint. Matching by name keeps torch,
onnxruntime, llama.cpp, httpx and aiohttp out of this module's imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inferrelay.kinds import ErrorKind

DOCTOR = "inferrelay doctor PATH says which file is wrong and how"


@dataclass(frozen=True)
class Rule:
    kind: ErrorKind
    hint: str | None = None
    types: tuple[str, ...] = ()
    package: str | None = None
    pattern: str | None = None
    loading_only: bool = False

    def matches(self, exc: BaseException, text: str, loading: bool) -> bool:
        if self.loading_only and not loading:
            return False
        classes = type(exc).__mro__
        if self.types and not any(c.__name__ in self.types for c in classes):
            return False
        if self.package and not type(exc).__module__.startswith(self.package):
            return False
        return not self.pattern or re.search(self.pattern, text, re.IGNORECASE) is not None


RULES: tuple[Rule, ...] = (
    # Out of memory: torch (CPU and CUDA), onnxruntime's allocator, llama.cpp, C++ bad_alloc, Python.
    Rule(ErrorKind.OUT_OF_MEMORY, types=("OutOfMemoryError", "MemoryError")),
    Rule(
        ErrorKind.OUT_OF_MEMORY,
        pattern=r"out of memory|failed to allocate|(cannot|can.t) allocate memory|bad_alloc|CUDA_ERROR_OUT_OF_MEMORY",
    ),
    # The prompt does not fit the model's window.
    Rule(
        ErrorKind.CONTEXT_LENGTH,
        pattern=r"exceeds? (the )?context window|maximum context length|sequence length is longer than the specified",
    ),
    # The chat template refuses the messages (jinja2 raises these through transformers and llama.cpp).
    Rule(
        ErrorKind.BAD_REQUEST,
        "The messages do not fit the model's chat template (roles, order, a system message it does not take).",
        types=("TemplateError", "TemplateSyntaxError", "UndefinedError"),
    ),
    Rule(ErrorKind.BAD_REQUEST, "The messages do not fit the model's chat template.", pattern=r"roles must alternate"),
    # A library that is there but cannot load its native part.
    Rule(
        ErrorKind.DEPENDENCY_MISSING,
        "A native library is missing or built for another machine: reinstall the package the message names.",
        pattern=r"cannot open shared object file|undefined symbol|DLL load failed",
    ),
    # Model files: missing, damaged, truncated, of an architecture the library does not know.
    Rule(ErrorKind.MODEL_LOAD_FAILED, f"A model file is missing; {DOCTOR}.", types=("FileNotFoundError",)),
    Rule(
        ErrorKind.MODEL_LOAD_FAILED,
        f"A weight file is damaged or truncated: download it again; {DOCTOR}.",
        types=("SafetensorError", "UnpicklingError", "DecodeError", "HeaderTooLarge", "InvalidProtobuf"),
    ),
    Rule(
        ErrorKind.MODEL_LOAD_FAILED,
        "This library does not know the model's architecture: upgrade it, or put an engine that does first.",
        pattern=r"does not recognize this architecture|unrecognized (model|configuration)|unknown model architecture",
    ),
    Rule(
        ErrorKind.MODEL_LOAD_FAILED,
        f"llama.cpp could not read the file; {DOCTOR}.",
        pattern=r"failed to load model|error loading model|invalid magic|tensor data is not within the file bounds",
    ),
    Rule(
        ErrorKind.MODEL_LOAD_FAILED,
        f"onnxruntime could not read the graph; {DOCTOR}.",
        package="onnxruntime",
        types=("NoSuchFile", "InvalidGraph", "Fail", "NotImplemented"),
        loading_only=True,
    ),
    Rule(
        ErrorKind.MODEL_LOAD_FAILED,
        "The tokenizer files are missing or damaged: restore them from the model's source.",
        pattern=r"tokenizer",
        loading_only=True,
    ),
    # Remote providers through httpx or aiohttp (a plugin's own client included).
    Rule(
        ErrorKind.TIMEOUT,
        types=("TimeoutException", "ReadTimeout", "ConnectTimeout", "ServerTimeoutError", "TimeoutError"),
    ),
    Rule(
        ErrorKind.TRANSIENT,
        types=(
            "ConnectError",
            "ClientConnectorError",
            "ServerDisconnectedError",
            "RemoteProtocolError",
            "ConnectionError",
        ),
    ),
    Rule(ErrorKind.UPSTREAM_ERROR, types=("HTTPStatusError", "ClientResponseError")),
)


def match(exc: BaseException, text: str, loading: bool) -> Rule | None:
    return next((rule for rule in RULES if rule.matches(exc, text, loading)), None)
