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
    """The source's real path, its format and its facts; a 400 for anything else."""
    if not source.strip():
        raise bad_request("source is empty: give a path under a model root", param="source")
    if source.startswith(PACKAGE_PREFIX):
        try:
            path = resolve_source(source).path.resolve()
        except InferrelayError as exc:
            raise bad_request(f"source {source!r}: {exc.message}", param="source") from exc
    else:
        path = _inside_roots(source, roots)
    try:
        format = detect_format(path)
        facts = model_facts(path, format)
    except InferrelayError as exc:
        raise bad_request(f"source {source!r} cannot be registered: {exc.message}", param="source") from exc
    return path, format, facts


def _inside_roots(source: str, roots: list[Path]) -> Path:
    if ".." in PurePath(source).parts:
        raise bad_request(f"source {source!r} contains '..': path traversal is refused; give a path under a model root")
    if not roots:
        raise bad_request("no model roots are configured (runtime.model_roots)", param="source")
    given = Path(source).expanduser()
    candidate = given if given.is_absolute() else roots[0] / given
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, RuntimeError) as exc:
        raise bad_request(f"source {source!r}: {candidate} does not exist", param="source") from exc
    allowed = [root.expanduser().resolve() for root in roots]
    if not any(real.is_relative_to(root) for root in allowed):
        listed = ", ".join(str(root) for root in allowed)
        raise bad_request(
            f"source {source!r} resolves to {real}, outside the model roots ({listed}); "
            "move or copy the model under a root, or add its folder to runtime.model_roots",
            param="source",
        )
    return real
