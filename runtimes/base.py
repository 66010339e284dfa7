"""The one small interface every runtime adapter implements: run one graph on numpy feeds."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Adapter(Protocol):
    name: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of the loaded graph; inputs and outputs named as in trm_edge.spec."""

    def io(self) -> dict[str, list]:
        """The loaded graph's input and output names and shapes (an int per static dimension)."""

    def describe(self) -> dict:
        """What ran: backend, version, threads, graph file."""
