"""The one small interface every runtime adapter implements (run one graph on numpy feeds), and how every adapter
says an engine's failure: one line naming the engine and the cause."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from trm_edge.errors import CheckFailed


class Adapter(Protocol):
    name: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of the loaded graph; inputs and outputs named as in trm_edge.spec."""

    def io(self) -> dict[str, list]:
        """The loaded graph's input and output names and shapes (an int per static dimension)."""

    def describe(self) -> dict:
        """What ran: backend, version, threads, graph file."""


# What engines' errors say before the cause: OpenVINO's C++ trace lines ("Exception from src/inference/src/cpp/
# core.cpp:132:", "Check 'x' failed at src/core/...cpp:900:", then "Incorrect weights in bin file!") and ORT's prefix
# ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running Gather node. ...")
_TRACE_LINE = re.compile(r"(Exception from|Check '.*' failed at) \S+:\d+:")
_ORT_PREFIX = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : (Non-zero status code returned while running )?")


def engine_cause(e: BaseException) -> str:
    """The line of an engine's error that says what went wrong, without the engine's boilerplate: the first that is
    not a source location (ORT's and LiteRT's come first; OpenVINO's after its trace), else the error's type."""
    lines = [t.strip() for t in str(e).splitlines() if t.strip() and not _TRACE_LINE.fullmatch(t.strip())]
    return _ORT_PREFIX.sub("", lines[0], count=1)[:200] if lines else type(e).__name__


@contextlib.contextmanager
def engine_run(engine: str, graph: str) -> Iterator[None]:
    """An engine's failure during a run as one line (exit 1), not a traceback: a graph can pass every load check and
    still fail on its data. Ctrl-C (not an Exception) passes through."""
    try:
        yield
    except Exception as e:
        raise CheckFailed(f"{engine}: running {graph} failed ({engine_cause(e)})") from None
