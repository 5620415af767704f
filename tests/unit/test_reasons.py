"""The reason catalogue: reasons.proto, docs/reasons.md and the code agree."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import planzoom
import services
from planzoom.errors import InvalidInput, PlanzoomError, reason_code, reason_name
from planzoom.v1.reasons_pb2 import Reason

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| ([A-Z_() a-z]+?) \|", re.M)


def _table() -> dict[str, str]:
    return dict(ROW.findall((ROOT / "docs" / "reasons.md").read_text()))


def _error_classes() -> list[type[PlanzoomError]]:
    for package in (planzoom, services):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    found, todo = [], [PlanzoomError]
    while todo:
        for cls in todo.pop().__subclasses__():
            found.append(cls)
            todo.append(cls)
    return found


def test_the_table_lists_exactly_the_catalogue():
    names = {reason_name(v) for v in Reason.values()} - {""}
    assert set(_table()) == names


def test_every_error_class_has_a_reason_of_the_catalogue_and_its_code():
    table = _table()
    classes = _error_classes()
    assert len(classes) > 30
    for cls in classes:
        if cls.__name__ == "Problem":  # its code follows from each answer's status
            continue
        assert table[cls.reason] == cls.code.name, (cls, cls.reason)


def test_every_reason_the_code_names_is_in_the_catalogue():
    literal = re.compile(r"""reason\s*=\s*f?["']([A-Z][A-Z0-9_]+)["']""")
    problem = re.compile(r"Problem\(\s*\d{3},.*?[\"']([A-Z][A-Z_]{2,})[\"']", re.S)
    named = set()
    for path in [*ROOT.glob("planzoom/**/*.py"), *ROOT.glob("services/**/*.py")]:
        text = path.read_text()
        named |= set(literal.findall(text)) | set(problem.findall(text))
    assert len(named) > 40
    for name in named:
        reason_code(name)  # raises for a reason the catalogue lacks


def test_a_reason_outside_the_catalogue_is_refused_at_once():
    with pytest.raises(ValueError, match="not in the catalogue"):
        InvalidInput("x", reason="SOMETHING_NEW")
    with pytest.raises(ValueError, match="not in the catalogue"):
        type("Bad", (InvalidInput,), {"reason": "ALSO_NEW"})
    assert reason_name(reason_code("PDF_DAMAGED")) == "PDF_DAMAGED"
    assert reason_name(0) == "" and reason_name(99999) == ""
