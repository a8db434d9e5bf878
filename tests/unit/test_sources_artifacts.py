"""config/sources.py (format detection, package sources) and engines/artifacts.py (the build cache)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from inferrelay.config.sources import ModelSource, content_digest, detect_format, resolve_source
from inferrelay.engines.artifacts import cached_artifact
from inferrelay.errors import ErrorKind, InferrelayError


def gguf(path: Path, payload: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + payload)
    return path


# --- detect_format / resolve_source -----------------------------------------------------------


def test_gguf_magic_decides_not_the_suffix(tmp_path: Path) -> None:
    assert detect_format(gguf(tmp_path / "model.bin")) == "gguf"
    assert detect_format(gguf(tmp_path / "model.gguf")) == "gguf"


def test_non_gguf_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(InferrelayError) as caught:
        detect_format(path)
    assert caught.value.kind is ErrorKind.MODEL_LOAD_FAILED
    assert "GGUF" in caught.value.message
    assert str(path) in caught.value.message


def test_short_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    path.write_bytes(b"GG")
    with pytest.raises(InferrelayError):
        detect_format(path)


def test_onnx_suffix(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07")
    assert detect_format(path) == "onnx"


def test_folder_formats(tmp_path: Path) -> None:
    st = tmp_path / "st"
    st.mkdir()
    (st / "config.json").write_text("{}")
    (st / "modules.json").write_text("[]")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert detect_format(st) == "sentence_transformers"
    assert detect_format(hf) == "hf_folder"


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InferrelayError) as caught:
        detect_format(tmp_path)
    assert caught.value.kind is ErrorKind.MODEL_LOAD_FAILED
    assert "config.json" in caught.value.message


def test_resolve_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    with pytest.raises(InferrelayError) as caught:
        resolve_source(str(missing))
    assert caught.value.kind is ErrorKind.MODEL_LOAD_FAILED
    assert "does not exist" in caught.value.message
    assert str(missing) in caught.value.message


def test_resolve_file(tmp_path: Path) -> None:
    path = gguf(tmp_path / "m.gguf")
    source = resolve_source(str(path))
    assert source == ModelSource(path, "gguf")
    assert source.folder == tmp_path


def test_resolve_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    gguf(tmp_path / "m.gguf")
    assert resolve_source("~/m.gguf") == ModelSource(tmp_path / "m.gguf", "gguf")


def test_missing_package_is_dependency_missing() -> None:
    with pytest.raises(InferrelayError) as caught:
        resolve_source("package:inferrelay_no_such_pkg/model")
    assert caught.value.kind is ErrorKind.DEPENDENCY_MISSING
    assert "inferrelay_no_such_pkg" in caught.value.message
    assert caught.value.hint == "pip install inferrelay-no-such-pkg"


def test_package_source_resolves_inside_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "unit_model_pkg"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    source = resolve_source("package:unit_model_pkg/model")
    assert source.format == "hf_folder"
    assert source.path.resolve() == (package / "model").resolve()


# --- cached_artifact ---------------------------------------------------------------------------


def test_builds_once_and_reuses(tmp_path: Path) -> None:
    source = ModelSource(gguf(tmp_path / "src" / "m.gguf"), "gguf")
    calls: list[Path] = []

    def build(into: Path) -> None:
        calls.append(into)
        (into / "model.onnx").write_text("exported")

    first = cached_artifact(tmp_path / "home", "onnx", source, build)
    second = cached_artifact(tmp_path / "home", "onnx", source, build)
    assert first == second
    assert len(calls) == 1
    assert calls[0] != first  # built in a staging folder, renamed into place
    assert first.parent == tmp_path / "home" / "cache"
    assert first.name == f"onnx-{source.digest()}"
    assert (first / "model.onnx").read_text() == "exported"


def test_kinds_have_separate_entries(tmp_path: Path) -> None:
    source = ModelSource(gguf(tmp_path / "src" / "m.gguf"), "gguf")
    a = cached_artifact(tmp_path / "home", "onnx", source, lambda p: None)
    b = cached_artifact(tmp_path / "home", "other", source, lambda p: None)
    assert a != b


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    source = ModelSource(gguf(tmp_path / "src" / "m.gguf"), "gguf")
    home = tmp_path / "home"

    def broken(into: Path) -> None:
        (into / "half.onnx").write_text("partial")
        raise RuntimeError("export crashed")

    with pytest.raises(RuntimeError, match="export crashed"):
        cached_artifact(home, "onnx", source, broken)
    cache = home / "cache"
    assert not (cache / f"onnx-{source.digest()}").exists()
    assert [p for p in cache.iterdir() if p.is_dir()] == []

    def good(into: Path) -> None:
        (into / "ok").write_text("ok")

    built = cached_artifact(home, "onnx", source, good)
    assert (built / "ok").exists()
    assert not (built / "half.onnx").exists()


def test_key_follows_the_content(tmp_path: Path) -> None:
    path = gguf(tmp_path / "src" / "m.gguf", b"version 1")
    calls: list[str] = []
    home = tmp_path / "home"
    first = cached_artifact(home, "onnx", ModelSource(path, "gguf"), lambda p: calls.append("v1"))

    gguf(path, b"version 2, longer")  # no cache clearing: a running server sees the change too
    second = cached_artifact(home, "onnx", ModelSource(path, "gguf"), lambda p: calls.append("v2"))
    assert first != second
    assert calls == ["v1", "v2"]


def test_same_content_elsewhere_shares_the_artifact(tmp_path: Path) -> None:
    a = ModelSource(gguf(tmp_path / "a" / "m.gguf", b"same"), "gguf")
    b = ModelSource(gguf(tmp_path / "b" / "m.gguf", b"same"), "gguf")
    c = ModelSource(gguf(tmp_path / "c" / "m.gguf", b"different"), "gguf")
    assert a.digest() == b.digest()
    assert a.digest() != c.digest()


def test_folder_digest_covers_names_and_contents(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "weights.bin").write_bytes(b"1")
    before = content_digest(folder)
    (folder / "weights.bin").write_bytes(b"22")
    changed = content_digest(folder)
    (folder / "weights.bin").rename(folder / "other.bin")
    renamed = content_digest(folder)
    assert len({before, changed, renamed}) == 3
