"""A model source checked before it is registered: inside a model root, a known format, whole.

Every refusal is a 400 that names the path, says what is wrong and what to do.
Packaged models (`package:<module>/<path>`) come from installed Python
packages and skip the roots check, not the others.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from inferrelay.config.sources import PACKAGE_PREFIX, detect_format, resolve_source
from inferrelay.errors import InferrelayError, bad_request
from inferrelay.models.facts import ModelFacts, model_facts


def check_source(source: str, roots: list[Path]) -> tuple[Path, str, ModelFacts]:
    """The source's real path, its format and its facts; a 400 for anything else.

    A relative source is taken under the first root.
    """
    if not source.strip():
        raise bad_request("source is empty: give the path of a model file or folder under a model root", "source")
    # Without the prefix, as "package:.." would be one harmless-looking segment.
    if ".." in PurePath(source.removeprefix(PACKAGE_PREFIX)).parts:
        raise bad_request(
            f"source {source!r} contains a '..' segment: path traversal is refused; give a path under a model root",
            "source",
        )
    path = _packaged(source) if source.startswith(PACKAGE_PREFIX) else _inside_roots(source, roots)
    try:
        format = detect_format(path)
        facts = model_facts(path, format)
    except (InferrelayError, OSError) as exc:
        reason = exc.message if isinstance(exc, InferrelayError) else str(exc)
        raise bad_request(f"source {source!r} cannot be registered: {reason}", "source") from exc
    return path, format, facts


def _packaged(source: str) -> Path:
    try:
        return resolve_source(source).path.resolve()
    except InferrelayError as exc:
        raise bad_request(f"source {source!r}: {exc.message} ({exc.hint})", "source") from exc


def _inside_roots(source: str, roots: list[Path]) -> Path:
    """The real path (symlinks resolved), refused unless it lies under a root's real path."""
    if not roots:
        raise bad_request(
            f"source {source!r}: no model roots are configured; list the folders models may come from in "
            "runtime.model_roots",
            "source",
        )
    given = Path(source).expanduser()
    candidate = given if given.is_absolute() else roots[0] / given
    try:
        real = candidate.resolve(strict=True)
    except FileNotFoundError as exc:
        raise bad_request(
            f"source {source!r}: {candidate} does not exist; check the path (relative sources are under {roots[0]})",
            "source",
        ) from exc
    except (OSError, RuntimeError) as exc:  # a symlink loop, a folder it may not enter
        raise bad_request(f"source {source!r}: {candidate} cannot be resolved: {exc}", "source") from exc
    allowed = [root.expanduser().resolve() for root in roots]
    if not any(real.is_relative_to(root) for root in allowed):
        raise bad_request(
            f"source {source!r} resolves to {real}, outside the model roots ({', '.join(map(str, allowed))}); "
            "move or copy the model under a root, or add its folder to runtime.model_roots",
            "source",
        )
    return real
