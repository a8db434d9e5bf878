"""What a batch run did, for its last line and its exit code: a leaf that the coordinator and the progress share."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Summary:
    rows: int = 0
    rows_computed: int = 0
    checkpoints_dropped: int = 0
    seconds: float = 0.0
    retries: int = 0
    workers_died: int = 0
    failed: list[str] = field(default_factory=list)
    stopped: bool = False
