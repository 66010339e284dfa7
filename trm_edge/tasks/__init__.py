"""Task codecs: puzzle text <-> the token sequences TRM reads and writes, and each task's rules.

numpy and the stdlib only: this runs on devices without torch.
"""

from __future__ import annotations

import os
import re

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks.arc import ARC, ArcCodec, decode_grid, encode_grid, parse_task
from trm_edge.tasks.base import Codec, Pair, View
from trm_edge.tasks.maze import MAZE, MazeCodec, shortest_path
from trm_edge.tasks.sudoku import SUDOKU, SudokuCodec
from trm_edge.untrusted import read_limited, read_stdin

CODECS: dict[str, type[Codec]] = {"arc": ArcCodec, "maze": MazeCodec, "sudoku": SudokuCodec}
_FILE_SUFFIXES = (".txt", ".csv", ".json")
_NAME = re.compile(r"[\w.~/\\-]*[A-Za-z][\w.~/\\-]*")  # letters and path characters: no puzzle of any task looks so

__all__ = [
    "ARC",
    "CODECS",
    "MAZE",
    "SUDOKU",
    "ArcCodec",
    "Codec",
    "MazeCodec",
    "Pair",
    "SudokuCodec",
    "View",
    "decode_grid",
    "encode_grid",
    "get_codec",
    "looks_like_a_path",
    "parse_task",
    "read_puzzles",
    "read_source",
    "shortest_path",
]


def get_codec(name: str, **kw) -> Codec:
    """A codec by task name; options (maze: size) go to its constructor."""
    cls = CODECS.get(name.lower())
    if cls is None:
        raise TRMEdgeError(f"unknown task {name!r} (known: {', '.join(sorted(CODECS))})")
    try:
        return cls(**kw)
    except TypeError:
        raise TRMEdgeError(f"{name}: unsupported option(s): {', '.join(kw)}") from None


def codec_for(task: str | None, seq_len: int, source: object = "model") -> Codec:
    """The codec matching a model's task and sequence length (a maze model's side follows from it)."""
    if task is None:
        raise TRMEdgeError(f"{source}: cannot tell the model's task; pass --task sudoku|maze|arc")
    if task == "maze":
        side = int(round(seq_len ** 0.5))
        if side * side != seq_len:
            raise TRMEdgeError(f"{source}: a maze model needs a square sequence length, got {seq_len}")
        return get_codec("maze", size=side)
    codec = get_codec(task)
    if codec.seq_len != seq_len:
        raise TRMEdgeError(f"{source}: the model reads {seq_len} tokens but a {task} puzzle has {codec.seq_len}; "
                           "pass the right --task")
    return codec


MAX_INPUT_BYTES = 64 << 20  # a million sudokus is 82 MB; nobody types more than this


def _decode(data: bytes, origin: str) -> str:
    if len(data) > MAX_INPUT_BYTES:
        raise TRMEdgeError(f"{origin}: more than {MAX_INPUT_BYTES >> 20} MB of puzzles; split the file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TRMEdgeError(f"{origin}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save it "
                           "as UTF-8") from None


def looks_like_a_path(arg: str) -> bool:
    """A mistyped file or bundle name, not a puzzle: a path separator, a file suffix, or letters among path characters
    only (sudoku puzzles have no letters; mazes have '#' or spaces; ARC grids are digits or JSON)."""
    return "\n" not in arg and (os.sep in arg or arg.endswith(_FILE_SUFFIXES) or _NAME.fullmatch(arg) is not None)


def read_source(source: str) -> tuple[str, str | None]:
    """(text, where it came from) of '-' (stdin), a file path, or else the text itself (origin None)."""
    if source == "-":
        return _decode(read_stdin(MAX_INPUT_BYTES), "<stdin>"), "<stdin>"
    if os.path.isdir(source):
        raise TRMEdgeError(f"{source}: is a directory; give a puzzle file, a puzzle string or - for stdin")
    if os.path.exists(source):  # a FIFO or a device is named as such, never opened to block or run forever
        return _decode(read_limited(source, MAX_INPUT_BYTES, "puzzle file"), source), source
    return source, None


def read_puzzles(codec: Codec, source: str) -> list[Pair]:
    """(puzzle, label or None) pairs from '-' (stdin), a file path, or else the puzzle text itself.

    A sudoku file holds one puzzle a line or one 9-line grid; a maze or ARC file holds one puzzle (for ARC, a
    task: its test inputs). Errors name the file, and the line where there is one.
    """
    text, origin = read_source(source)
    try:
        pairs = codec.parse_text(text)
    except TRMEdgeError as e:
        if origin is not None:
            raise TRMEdgeError(f"{origin}: {e}") from None
        if looks_like_a_path(source):
            raise TRMEdgeError(f"{source}: no such file, and not a {codec.name} puzzle either ({e})") from None
        raise
    if not pairs:
        raise TRMEdgeError(
            f"{origin or 'input'}: no puzzles found (blank lines and '#' comment lines are skipped)"
        )
    return pairs
