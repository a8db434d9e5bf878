"""Read a configuration directory into `Settings`, saying exactly what is wrong and where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from inferrelay.config.embedded import embedded_models
from inferrelay.config.schema import ModelSpec, Settings, Strict

MAPPINGS_FILE = "model-mappings.yaml"


class ConfigError(Exception):
    """A broken configuration: one line per problem, each with its file and key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class MappingsFile(Strict):
    """model-mappings.yaml, as far as the embedded engines need it (issue 3 extends it)."""

    fallback: bool = True
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)


def load_settings(config_dir: Path | None, home: Path) -> Settings:
    """The embedded models, overridden or extended by `config_dir`/model-mappings.yaml."""
    mappings = _read_mappings(config_dir) if config_dir else MappingsFile()
    models = {spec.name: spec for spec in embedded_models()}
    problems: list[str] = []
    for name, fields in mappings.models.items():
        base = models[name].model_dump() if name in models else {}
        try:
            models[name] = ModelSpec.model_validate({**base, **(fields or {}), "name": name})
        except ValidationError as exc:
            where = f"{config_dir}/{MAPPINGS_FILE}"
            problems += [_describe(where, err, ("models", name)) for err in exc.errors()]
    if problems:
        raise ConfigError(problems)
    return Settings(models=list(models.values()), fallback=mappings.fallback, home=home)


def _read_mappings(config_dir: Path) -> MappingsFile:
    if not config_dir.is_dir():
        raise ConfigError([f"{config_dir}: not a directory"])
    path = config_dir / MAPPINGS_FILE
    if not path.exists():
        return MappingsFile()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    try:
        return MappingsFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([_describe(path, err) for err in exc.errors()]) from None


def _describe(where: Path | str, error: Any, prefix: tuple[str, ...] = ()) -> str:
    location = ".".join(str(p) for p in (*prefix, *error.get("loc", ())))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{where}: {location or '(top level)'}: {message}"
