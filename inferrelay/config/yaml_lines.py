"""YAML read together with the line of every key, so an error can say where it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[Any, ...]


class YamlDocument:
    def __init__(self, path: Path, data: Any, lines: dict[KeyPath, int]) -> None:
        self.path = path
        self.data = data
        self._lines = lines

    def line(self, key_path: KeyPath) -> int | None:
        """The line of the deepest key of `key_path` that the file has (1-based)."""
        for end in range(len(key_path), -1, -1):
            line = self._lines.get(tuple(key_path[:end]))
            if line is not None:
                return line
        return None

    def where(self, key_path: KeyPath) -> str:
        line = self.line(key_path)
        return f"{self.path}:{line}" if line else str(self.path)


def read_yaml(path: Path) -> YamlDocument:
    """Parse `path`; a YAML syntax error is raised as yaml.YAMLError with its own line."""
    text = path.read_text()
    lines: dict[KeyPath, int] = {}
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        _index(root, (), lines)
    return YamlDocument(path, yaml.safe_load(text) or {}, lines)


def _index(node: yaml.Node, prefix: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):  # a list or mapping as a key: safe_load says why it is wrong
                continue
            path = (*prefix, key.value)
            lines[path] = key.start_mark.line + 1
            _index(value, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index(item, (*prefix, index), lines)
