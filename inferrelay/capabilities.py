"""What a model can be asked for: a leaf that configuration and engines both name, so neither imports the other."""

from __future__ import annotations

from enum import Enum


class Capability(str, Enum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDINGS = "embeddings"
