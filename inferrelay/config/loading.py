"""Read a configuration directory into `Settings`, saying exactly what is wrong and where.

Every problem is one line, `FILE:LINE: key.path: message`, and all of them are
reported at once, so one run of `inferrelay config validate` shows the lot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from inferrelay.config.crossref import cross_check
from inferrelay.config.embedded import embedded_models
from inferrelay.config.mappings import MappingsFile
from inferrelay.config.providers import LOCAL, REMOTE_TYPES, LocalProvider, Provider, ProvidersFile
from inferrelay.config.schema import ModelSpec, Settings
from inferrelay.config.yaml_lines import KeyPath, YamlDocument, read_yaml

MAPPINGS_FILE = "model-mappings.yaml"
PROVIDERS_FILE = "providers.yaml"

M = TypeVar("M", bound=BaseModel)
PROVIDER_TYPES = (LOCAL, *REMOTE_TYPES)


class ConfigError(Exception):
    """A broken configuration: one line per problem, each with its file, line and key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings(config_dir: Path | None, home: Path) -> Settings:
    """The embedded models, overridden or extended by the files of `config_dir`."""
    if config_dir is None:
        return Settings(models=embedded_models(), home=home)
    if not config_dir.is_dir():
        raise ConfigError([f"{config_dir}: not a directory"])
    problems: list[str] = []
    providers_doc = _read(config_dir / PROVIDERS_FILE, problems)
    mappings_doc = _read(config_dir / MAPPINGS_FILE, problems)
    providers_file = _parse(ProvidersFile, providers_doc, problems) or ProvidersFile()
    mappings = _parse(MappingsFile, mappings_doc, problems) or MappingsFile()
    models = _models(mappings, mappings_doc, problems)
    providers: dict[str, Provider] = {LOCAL: LocalProvider(type="local"), **providers_file.providers}
    if not problems and mappings_doc is not None:
        for path, message in cross_check(mappings, providers, set(models)):
            problems.append(_line(mappings_doc, path, message))
    if problems:
        raise ConfigError(problems)
    return Settings(
        models=list(models.values()),
        fallback=mappings.fallback,
        home=home,
        providers=providers,
        routes=mappings,
        runtime=mappings.runtime,
    )


def _read(path: Path, problems: list[str]) -> YamlDocument | None:
    if not path.exists():
        return None
    try:
        document = read_yaml(path)
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    except OSError as exc:
        problems.append(f"{path}: cannot be read: {exc.strerror or exc}")
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problems.append(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}")
        return None
    if not isinstance(document.data, dict):
        problems.append(f"{path}:1: (top level): must be a mapping of keys, not {type(document.data).__name__}")
        return None
    return document


def _parse(model: type[M], document: YamlDocument | None, problems: list[str]) -> M | None:
    if document is None:
        return None
    data = dict(document.data)
    if model is MappingsFile:  # models are checked one by one against the embedded defaults
        data.pop("models", None)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        problems += [_pydantic_line(document, err) for err in exc.errors()]
        return None
    if model is MappingsFile:
        raw_models = document.data.get("models") or {}
        if not isinstance(raw_models, dict):
            problems.append(_line(document, ("models",), "must be a mapping of model name to its fields"))
            return None
        parsed = parsed.model_copy(update={"models": raw_models})
    return parsed


def _models(mappings: MappingsFile, document: YamlDocument | None, problems: list[str]) -> dict[str, ModelSpec]:
    models = {spec.name: spec for spec in embedded_models()}
    for name, fields in mappings.models.items():
        base = models[name].model_dump() if name in models else {}
        if not isinstance(fields, dict):
            problems.append(_line(document, ("models", name), "must be a mapping of fields"))
            continue
        try:
            models[name] = ModelSpec.model_validate({**base, **fields, "name": name})
        except ValidationError as exc:
            problems += [_pydantic_line(document, err, ("models", name)) for err in exc.errors()]
    return models


def _pydantic_line(document: YamlDocument | None, error: Any, prefix: KeyPath = ()) -> str:
    path = (*prefix, *_without_union_tags(tuple(error.get("loc", ()))))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = "unknown key"
    return _line(document, path, message)


def _without_union_tags(loc: KeyPath) -> KeyPath:
    """Pydantic puts the chosen member of a tagged union (`providers.NAME.vllm.base_url`) in a location."""
    if len(loc) > 2 and loc[0] == "providers" and loc[2] in PROVIDER_TYPES:
        return (*loc[:2], *loc[3:])
    return loc


def _line(document: YamlDocument | None, path: KeyPath, message: str) -> str:
    where = document.where(path) if document else "(no file)"
    dotted = ".".join(str(p) for p in path) or "(top level)"
    return f"{where}: {dotted}: {message}"
