"""The layering rule, checked: the portable modules never import ctypes and
never name an operating system.  Only the backend seam (``_backend.py``) and
the OS bindings (``_posix*.py``, ``_windows*.py``) may."""

from __future__ import annotations

import ast
import os
import re

import pytest

import ctipc

PACKAGE = os.path.dirname(os.path.abspath(ctipc.__file__))
SEAM = re.compile(r"^(_backend|_posix.*|_windows.*)\.py$")
PORTABLE = sorted(f for f in os.listdir(PACKAGE) if f.endswith(".py") and not SEAM.match(f))
# Words that name an OS or its knowledge
OS_WORDS = re.compile(r"darwin|win32|sys\.platform|winerror|/dev/shm")


def _source(module: str) -> str:
    with open(os.path.join(PACKAGE, module), encoding="utf-8") as f:
        return f.read()


def test_the_portable_modules_are_found() -> None:
    assert {"lock.py", "semaphore.py", "shm.py", "_segment.py", "mq.py"} <= set(PORTABLE)


@pytest.mark.parametrize("module", PORTABLE)
def test_a_portable_module_does_not_import_ctypes(module: str) -> None:
    tree = ast.parse(_source(module))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        assert not any(n == "ctypes" or n.startswith("ctypes.") for n in names), (
            f"{module} imports ctypes (line {node.lineno})"
        )


@pytest.mark.parametrize("module", PORTABLE)
def test_a_portable_module_names_no_operating_system(module: str) -> None:
    hits = [
        f"{module}:{i}: {line.strip()}"
        for i, line in enumerate(_source(module).splitlines(), 1)
        if OS_WORDS.search(line)
    ]
    assert not hits, "\n".join(hits)
