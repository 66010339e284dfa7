"""What every command module shares: the consoles, the options several commands take, and the 80-column table.

Its own small module so that the command modules (cli.py, benchmarks/commands.py, runtimes/commands.py) depend on it
and not on each other: the CLI imports the command modules, never the other way round.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SeqLenOpt = Annotated[int | None, typer.Option("--seq-len", min=1,
                                               help="For attention checkpoints without dataset.json.")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="sudoku, maze or arc, when the model does not say.")]
HaltOpt = Annotated[str | None, typer.Option("--halt", help="fixed[:N] (official) or learned[:TAU][,min=K][,max=M], "
                                             "then ,verify to stop at an answer the rules accept; default: the "
                                             "model's recommended policy.")]
ViewsOpt = Annotated[int | None, typer.Option("--views", min=1, max=256, help="Symmetric views of each puzzle; the "
                                              "first answer the rules accept wins (sudoku, maze).")]
BackendOpt = Annotated[str | None, typer.Option("--backend", help="For bundles: ort, openvino, litert or torch; "
                                                "default (auto): the route `trm-edge tune` chose on this machine when "
                                                "no other route option is given, else ort.")]
GraphOpt = Annotated[str, typer.Option("--graph", help="For bundles: step, loop or unrolled.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="For bundles: fp32 or an int8 mode the bundle has "
                                           "for that backend (int8, int8-static, int8-dynamic, int8-rows, "
                                           "int8-weights, int4-weights).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, max=1024,
                                                help="Intra-op threads (default: the runtime's).")]
DepthOpt = Annotated[str | None, typer.Option("--depth", help="H,L: recursion cycles per supervision step at "
                                              "inference (default: the model's). For a model or an export; a "
                                              "bundle's depth is fixed.")]
BatchOpt = Annotated[int, typer.Option(min=1, max=65536, help="Rows solved together (a bundle's step graph "
                                       "streams puzzles and their views through this many slots).")]

# every long command's option
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or progress lines (results, "
                                        "warnings and errors still print).")]


def word_table(headers: list[str], rows: list[list[str]], title: str) -> Table:
    """A table for an 80-column terminal: cells wrap between words, never inside one (rich would cut a long word
    with an ellipsis)."""
    t = Table(title=title, box=box.SIMPLE_HEAD)
    for i, h in enumerate(headers):
        t.add_column(h, min_width=max(len(w) for cell in [h, *(r[i] for r in rows)] for w in cell.split() or [""]))
    for row in rows:
        t.add_row(*row)
    return t


