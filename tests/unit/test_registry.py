"""The model registry on real SQLite files: seeding, round trips, refusals, restarts and migrations."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from inferrelay.config.embedded import MINILM, SMOLLM2, embedded_models
from inferrelay.config.schema import ModelSpec
from inferrelay.engines.base import Capability
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.runtime.registry import MIGRATIONS, ModelRegistry


def mine(name: str = "mine", **fields: object) -> ModelSpec:
    base: dict[str, object] = {
        "name": name,
        "source": "/srv/models/mine.gguf",
        "capabilities": [Capability.CHAT, Capability.COMPLETION],
        "engines": ["llamacpp", "torch"],
        "context_length": 4096,
        "engine_options": {"fake": {"latency_ms": 3}},
    }
    return ModelSpec.model_validate(base | fields)


def test_seeding_writes_the_embedded_models_once_and_keeps_a_users_change(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.seed(embedded_models())
    assert [(r.spec.name, r.builtin) for r in registry.list()] == [(MINILM.name, True), (SMOLLM2.name, True)]
    registry.update(SMOLLM2.name, pinned=True)
    registry.seed(embedded_models())
    smol = registry.get(SMOLLM2.name)
    assert smol is not None
    assert smol.spec.pinned, "seeding again must not undo a user's pin"


@pytest.mark.parametrize("keep_alive", [None, 0.0, -1.0, 300.0])
def test_every_field_round_trips(tmp_path: Path, keep_alive: float | None) -> None:
    registry = ModelRegistry(tmp_path)
    spec = mine(keep_alive=keep_alive, pinned=True, device="cpu", dtype="float16")
    registry.add(spec)
    stored = registry.get("mine")
    assert stored is not None
    assert stored.spec == spec
    assert not stored.builtin
    assert stored.as_dict()["keep_alive"] == keep_alive


def test_a_duplicate_is_a_conflict_and_changes_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first = registry.add(mine())
    with pytest.raises(InferrelayError) as caught:
        registry.add(mine(source="/elsewhere.gguf"))
    assert caught.value.kind is ErrorKind.CONFLICT
    assert caught.value.status == 409
    assert registry.get("mine") == first


def test_registrations_survive_a_restart(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    added = registry.add(mine())
    registry.close()
    reopened = ModelRegistry(tmp_path)
    assert reopened.get("mine") == added


def test_update_moves_updated_at_not_created_at_and_remove_spares_builtins(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.seed([SMOLLM2])
    added = registry.add(mine())
    changed = registry.update("mine", keep_alive=60)
    assert changed.spec.keep_alive == 60
    assert changed.created_at == added.created_at
    assert changed.updated_at > added.updated_at
    with pytest.raises(InferrelayError) as bad:
        registry.update("mine", context_length=-5)
    assert bad.value.kind is ErrorKind.BAD_REQUEST
    registry.remove("mine")
    assert registry.get("mine") is None
    with pytest.raises(InferrelayError) as builtin:
        registry.remove(SMOLLM2.name)
    assert "embedded" in builtin.value.message
    with pytest.raises(InferrelayError) as unknown:
        registry.remove("nobody")
    assert unknown.value.kind is ErrorKind.MODEL_NOT_FOUND


def test_a_newer_schema_is_refused_with_both_versions(tmp_path: Path) -> None:
    ModelRegistry(tmp_path).close()
    with sqlite3.connect(tmp_path / "registry.sqlite3") as db:
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(InferrelayError) as caught:
        ModelRegistry(tmp_path)
    assert f"schema version 7, newer than this inferrelay knows ({len(MIGRATIONS)})" in caught.value.message


def test_an_older_schema_is_upgraded_in_place_keeping_its_rows(tmp_path: Path) -> None:
    old = ModelRegistry(tmp_path)
    old.add(mine())
    old.close()

    def add_notes(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE models ADD COLUMN notes TEXT NOT NULL DEFAULT ''")

    upgraded = ModelRegistry(tmp_path, migrations=[*MIGRATIONS, add_notes])
    assert upgraded.get("mine") is not None
    upgraded.close()
    with sqlite3.connect(tmp_path / "registry.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
        assert db.execute("SELECT notes FROM models WHERE name = 'mine'").fetchone() == ("",)


def test_a_row_broken_by_hand_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = ModelRegistry(tmp_path)
    registry.add(mine("good"))
    registry.add(mine("broken"))
    registry.close()
    with sqlite3.connect(tmp_path / "registry.sqlite3") as db:
        db.execute("UPDATE models SET capabilities = '[\"dance\"]' WHERE name = 'broken'")
    with caplog.at_level(logging.WARNING):
        names = [r.spec.name for r in ModelRegistry(tmp_path).list()]
    assert names == ["good"]
    assert "skipping model 'broken'" in caplog.text
