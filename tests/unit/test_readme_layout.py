"""The README's layout names every folder and top-level module of inferrelay/ as the code has them now."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_the_layout_names_every_package_and_top_level_module() -> None:
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    named = set(re.findall(r"[\w]+/|[\w]+\.py", layout))
    package = REPO / "inferrelay"
    folders = {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}
    modules = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    assert folders <= named, f"missing from the README's layout: {sorted(folders - named)}"
    assert modules <= named, f"missing from the README's layout: {sorted(modules - named)}"
    existing = {p.name for p in package.rglob("*.py")}
    stale = {n for n in named if n.endswith(".py")} - existing
    assert not stale, f"the README's layout names modules that are gone: {sorted(stale)}"
