"""Every Python snippet of README.md runs as written and prints what its comments say.

The snippets are read from README.md itself, so the two cannot drift apart.
The conventions, which README.md follows:

- Every ```` ```python ```` block is a snippet, run as a script by a fresh
  interpreter (``-W error``) in an empty directory.  It must exit with
  status 0 and write nothing to stderr.
- A comment containing ``prints: TEXT`` expects one line of output, TEXT,
  exactly; the script's output must be those lines, in the comments' order
  (a callback's output is written beside the call that causes it).
- A block in which lines (at column 0) begin ``# Process A``, ``# Process B``
  ... is several programs, one per such line up to the next.  They run as
  separate processes, in order, each started once the one before has
  printed its first line, and all run to their end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import CHILD_PIDS, DEADLINE, child_env

import ctipc

README = Path(__file__).resolve().parent.parent / "README.md"

_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)
_PROCESS = re.compile(r"^# Process ([A-Z])\b", re.M)
_PRINTS = re.compile(r"#.*?\bprints: (.*)$")

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not ctipc.SEMAPHORE_VALUE_READABLE,
    reason="the outputs README.md shows are Linux's",
)


class Program(NamedTuple):
    label: str
    code: str
    expected: list[str]


class Snippet(NamedTuple):
    line: int  # of the opening fence in README.md
    programs: list[Program]


def snippets(text: str) -> list[Snippet]:
    found = []
    for block in _BLOCK.finditer(text):
        code = block.group(1)
        starts = [m.start() for m in _PROCESS.finditer(code)]
        parts = [code] if not starts else [code[a:b] for a, b in zip(starts, [*starts[1:], None])]
        if starts and code[: starts[0]].strip():
            raise AssertionError("code before the first '# Process' line belongs to no process")
        programs = [
            Program(
                m.group(1) if (m := _PROCESS.match(part)) else "-",
                part,
                [p.group(1) for line in part.splitlines() if (p := _PRINTS.search(line))],
            )
            for part in parts
        ]
        found.append(Snippet(text.count("\n", 0, block.start()) + 1, programs))
    return found


SNIPPETS = snippets(README.read_text(encoding="utf-8"))


def test_the_readme_has_the_snippets_this_file_expects() -> None:
    assert len(SNIPPETS) >= 6
    assert any(len(s.programs) == 2 for s in SNIPPETS)  # the MessageQueue's A and B
    assert sum(len(p.expected) for s in SNIPPETS for p in s.programs) >= 10


def test_the_conventions_are_read_as_documented() -> None:
    text = (
        "x\n```python\n# Process A: one\nprint(1)  # prints: 1\n"
        "# Process B\nf()  # waits; prints: b'x' y\n```\n"
    )
    (snippet,) = snippets(text)
    assert snippet.line == 2
    assert [(p.label, p.expected) for p in snippet.programs] == [("A", ["1"]), ("B", ["b'x' y"])]


class Running:
    """One program in its own interpreter; its stdout read by a thread."""

    def __init__(self, program: Program, cwd: str) -> None:
        self.program = program
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "error", "-c", program.code],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
            text=True,
        )
        CHILD_PIDS.add(self.proc.pid)
        self.lines: list[str] = []
        self.first_line = threading.Event()
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.first_line.set()
        self.first_line.set()  # ended without a line: do not wait for one
        self.stderr = self.proc.stderr.read()

    def finish(self, deadline: float) -> None:
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(DEADLINE)
        for stream in (self.proc.stdout, self.proc.stderr):
            assert stream is not None
            stream.close()


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"line {s.line}" for s in SNIPPETS])
def test_snippet_runs_and_prints_what_its_comments_say(snippet: Snippet) -> None:
    deadline = time.monotonic() + 2 * DEADLINE
    started: list[Running] = []
    with tempfile.TemporaryDirectory() as cwd:
        try:
            for program in snippet.programs:
                if started:
                    previous = started[-1]
                    assert previous.first_line.wait(DEADLINE), f"{previous.program.label} is silent"
                started.append(Running(program, cwd))
        finally:
            for running in started:
                running.finish(deadline)
        assert os.listdir(cwd) == []  # a snippet writes no files
    for running in started:
        where = f"README.md line {snippet.line}, process {running.program.label}"
        assert (running.proc.returncode, running.stderr) == (0, ""), where
        assert running.lines == running.program.expected, where
