"""The docs point at things that exist: every test and repo file they name, and no path of
one machine."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

TEST_REFERENCE = re.compile(r"\b(?:tests/)?(test_\w+\.py)::(\w+)")
REPO_FILE = re.compile(r"\b((?:rag|tests|ui|ingest|scripts|notebooks|docs|\.ci)/[\w/.-]+\.\w+)\b")
MACHINE_PATH = re.compile(r"(?<![\w$.~])/(?:work|home|root|Users|tmp)/")


def functions_in(path: Path) -> set[str]:
    """The names of the test functions defined in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_named_test_exists(doc: Path):
    missing = []
    for module, name in TEST_REFERENCE.findall(doc.read_text(encoding="utf-8")):
        path = REPO / "tests" / module
        if not path.is_file() or name not in functions_in(path):
            missing.append(f"{module}::{name}")
    assert missing == [], f"{doc.name} names tests that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_named_repo_file_exists(doc: Path):
    text = doc.read_text(encoding="utf-8")
    missing = sorted({name for name in REPO_FILE.findall(text) if not (REPO / name).exists()})
    assert missing == [], f"{doc.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_no_absolute_path_of_one_machine(doc: Path):
    lines = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]
    assert lines == [], f"{doc.name} holds paths of one machine: {lines}"


def test_the_checks_catch_what_they_look_for(tmp_path: Path):
    """The patterns match the forms the docs use (a test that cannot fail is a defect)."""
    assert TEST_REFERENCE.findall("`tests/test_lite.py::test_a` and test_ui.py::test_b") == [
        ("test_lite.py", "test_a"),
        ("test_ui.py", "test_b"),
    ]
    assert REPO_FILE.findall("(`rag/context.py`, tests/fake_llm.py.)") == [
        "rag/context.py",
        "tests/fake_llm.py",
    ]
    assert MACHINE_PATH.search("python -m ingest /home/me/docs")
    assert not MACHINE_PATH.search("`$HOME/.cache/milvus` or ../shared/data/x and ~/tmp/y")
    (tmp_path / "test_x.py").write_text("def test_y():\n    pass\n", encoding="utf-8")
    assert functions_in(tmp_path / "test_x.py") == {"test_y"}
