"""A model source checked before it is registered: inside a model root, a known format, whole.

Every refusal is a 400 that says what is wrong and what to do. A source
outside the roots gets one message, the same whether the path exists or
not, and never the path it resolves to: a caller learns nothing about the
rest of the disk. A packaged model (`package:<module>/<path>`) has one root,
its package's own folder.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from inferrelay.config.sources import PACKAGE_PREFIX, detect_format, in_folder, resolve_source
from inferrelay.errors import ErrorKind, InferrelayError, bad_request
from inferrelay.models.facts import ModelFacts, model_facts


def check_source(source: str, roots: list[Path]) -> tuple[Path, str, ModelFacts]:
    """The source's real path, its format and its facts; a 400 for anything else.

    A relative source is taken under the first root.
    """
    if not source.strip():
        raise bad_request("source is empty: give the path of a model file or folder under a model root", "source")
    if any(ord(c) < 32 or ord(c) == 127 for c in source):
        raise bad_request(
            "source contains a control character (a NUL byte, a newline, ...): give a plain path", "source"
        )
    # Without the prefix, as "package:.." would be one harmless-looking segment.
    if ".." in PurePath(source.removeprefix(PACKAGE_PREFIX)).parts:
        raise bad_request(
            f"source {source!r} contains a '..' segment: path traversal is refused; give a path under a model root",
            "source",
        )
    path = _packaged(source, roots) if source.startswith(PACKAGE_PREFIX) else _inside_roots(source, roots)
    try:
        format = detect_format(path)
        facts = model_facts(path, format)
    except (InferrelayError, OSError) as exc:
        reason = exc.message if isinstance(exc, InferrelayError) else str(exc)
        raise bad_request(f"source {source!r} cannot be registered: {reason}", "source") from exc
    return path, format, facts


def outside_roots(source: str, roots: list[Path]) -> InferrelayError:
    """The one refusal for a source outside the roots: it names the roots, never what lies outside them."""
    listed = ", ".join(str(root) for root in roots)
    return bad_request(
        f"source {source!r} is not a path under the model roots ({listed}): move or copy the model under a root, "
        "or add its folder to runtime.model_roots (a packaged model must be a path inside its package)",
        "source",
    )


def _packaged(source: str, roots: list[Path]) -> Path:
    try:
        return resolve_source(source).path.resolve()
    except InferrelayError as exc:
        if exc.kind is ErrorKind.DEPENDENCY_MISSING:
            raise bad_request(f"source {source!r}: {exc.message} ({exc.hint})", "source") from exc
        raise outside_roots(source, roots) from exc  # outside its package, or no package name: the same words


def _inside_roots(source: str, roots: list[Path]) -> Path:
    """The real path (symlinks resolved), refused unless it lies under a root's real path."""
    if not roots:
        raise bad_request(
            f"source {source!r}: no model roots are configured; list the folders models may come from in "
            "runtime.model_roots",
            "source",
        )
    try:
        given = Path(source).expanduser()
    except RuntimeError as exc:  # `~someone` with no such user
        raise outside_roots(source, roots) from exc
    candidate = given if given.is_absolute() else roots[0] / given
    if not any(in_folder(candidate, root.expanduser()) for root in roots):
        raise outside_roots(source, roots)
    real = candidate.resolve()
    if not os.path.exists(real):
        raise bad_request(
            f"source {source!r} does not exist under the model roots; check the path "
            f"(a relative source is under {roots[0]})",
            "source",
        )
    return real
