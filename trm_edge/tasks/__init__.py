"""Task codecs: puzzle text <-> the token sequences TRM reads and writes, and each task's rules.

numpy and the stdlib only: this runs on devices without torch.
"""

from __future__ import annotations

import functools
import os
import re
from importlib.metadata import EntryPoint, entry_points

import numpy as np

from trm_edge.errors import TRMEdgeError
from trm_edge.tasks.arc import ARC, ArcCodec, decode_grid, encode_grid, parse_task
from trm_edge.tasks.base import Codec, Pair, View
from trm_edge.tasks.generic import GenericCodec
from trm_edge.tasks.maze import MAZE, MazeCodec, shortest_path
from trm_edge.tasks.sudoku import SUDOKU, SudokuCodec
from trm_edge.untrusted import check_npy, read_limited, read_stdin

_FILE_SUFFIXES = (".txt", ".csv", ".json")
_NAME = re.compile(r"[\w.~/\\-]*[A-Za-z][\w.~/\\-]*")  # letters and path characters: no puzzle of any task looks so

__all__ = [
    "ARC",
    "BUILT_IN",
    "GROUP",
    "MAZE",
    "SUDOKU",
    "ArcCodec",
    "Codec",
    "GenericCodec",
    "MazeCodec",
    "Pair",
    "SudokuCodec",
    "View",
    "decode_grid",
    "encode_grid",
    "codec_class",
    "codec_for",
    "get_codec",
    "looks_like_a_path",
    "parse_task",
    "read_puzzles",
    "read_source",
    "plugins",
    "registered",
    "shortest_path",
]


GROUP = "trm_edge.tasks"  # the entry-point group a package registers its tasks under: NAME = "module:CodecClass"
# trm-edge's own tasks, in code (a stale or source-only install still has them); generic fits any model, so it is
# tried last, after the plugins.
BUILT_IN: dict[str, type[Codec]] = {"arc": ArcCodec, "maze": MazeCodec, "sudoku": SudokuCodec}
GENERIC = GenericCodec.name


@functools.cache
def plugins() -> dict[str, EntryPoint]:
    """The installed plugins' tasks by name (entry points of GROUP), read once; none replaces a built-in task."""
    found: dict[str, EntryPoint] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name):
        if ep.name.lower() not in (*BUILT_IN, GENERIC):
            found.setdefault(ep.name.lower(), ep)
    return found


def registered() -> dict[str, str]:
    """Every task known here, in the order a model's shape is tried against them, with what provides it."""
    return {**dict.fromkeys(BUILT_IN, "trm-edge"),
            **{name: ep.dist.name if ep.dist else ep.value for name, ep in plugins().items()}, GENERIC: "trm-edge"}


def codec_class(name: str) -> type[Codec]:
    """A task's codec class by name, a plugin's imported only now (a broken one is named, with its package)."""
    key = name.lower()
    if key in BUILT_IN or key == GENERIC:
        return BUILT_IN.get(key, GenericCodec)
    if (ep := plugins().get(key)) is None:
        raise TRMEdgeError(f"unknown task {name!r} (known here: {', '.join(registered())}); a package registers a "
                           f"task through the {GROUP!r} entry points: install the one that provides it (docs/tasks.md)")
    where = f"task {ep.name!r} ({ep.value}{f', from {ep.dist.name}' if ep.dist else ''})"
    try:
        cls = ep.load()
    except Exception as e:
        raise TRMEdgeError(f"{where} failed to load ({type(e).__name__}: {e}); reinstall or uninstall it") from None
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise TRMEdgeError(f"{where} is not a trm_edge.tasks.Codec subclass; fix or uninstall it")
    return cls


def _fits(name: str, vocab_size: int, seq_len: int) -> Codec | None:
    """The task's codec for this shape; a plugin that breaks on it is named, not a traceback."""
    cls = codec_class(name)
    try:
        return cls.fits(vocab_size, seq_len)
    except TRMEdgeError:
        raise
    except Exception as e:
        raise TRMEdgeError(f"task {name!r}: its codec failed on a model of {seq_len} tokens over {vocab_size} values "
                           f"({type(e).__name__}: {e}); fix or uninstall it") from None


def get_codec(name: str, **kw) -> Codec:
    """A codec by task name; options (maze: size) go to its constructor."""
    cls = codec_class(name)
    try:
        return cls(**kw)
    except TypeError:
        raise TRMEdgeError(f"{name}: unsupported option(s): {', '.join(kw) or 'none given, some needed'}") from None


def codec_for(task: str | None, vocab_size: int, seq_len: int, source: object = "model",
              dataset: str | os.PathLike | None = None) -> Codec:
    """The codec of a model of this shape: its task's (`task`), else the first registered task that fits the shape,
    the generic codec when none does. `dataset`: where a task without its own puzzles (generic) draws them."""
    if task is None:
        codec = next(c for name in registered() if (c := _fits(name, vocab_size, seq_len)) is not None)
    elif (codec := _fits(task, vocab_size, seq_len)) is None:
        raise TRMEdgeError(f"{source}: the model reads {seq_len} tokens over {vocab_size} values, which is no "
                           f"{task} puzzle; pass the right --task (generic takes any tokens)")
    return codec.with_dataset(dataset) if isinstance(codec, GenericCodec) and dataset else codec


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


def read_array(codec: Codec, path: str) -> list[Pair]:
    """Unlabelled puzzles as tokens, [n, seq_len] (or one puzzle's [seq_len]) integers in an .npy file: what a
    program holding a dataset's arrays passes most simply."""
    shape, dtype = check_npy(path, "puzzle array")
    if os.path.getsize(path) > MAX_INPUT_BYTES:
        raise TRMEdgeError(f"{path}: more than {MAX_INPUT_BYTES >> 20} MB of puzzles; split the file")
    if dtype.kind not in "iu" or len(shape) not in (1, 2) or shape[-1] != codec.seq_len or not np.prod(shape):
        raise TRMEdgeError(f"{path}: holds {dtype} of shape {shape}; give integer tokens of shape [n, "
                           f"{codec.seq_len}] ({codec.name} puzzles)")
    tokens = np.load(path, allow_pickle=False).reshape(-1, codec.seq_len)
    pairs = []
    for i, row in enumerate(tokens):
        try:
            pairs.append((codec.as_tokens(row), None))
        except TRMEdgeError as e:
            raise TRMEdgeError(f"{path}: row {i}: {e}") from None
    return pairs


def read_puzzles(codec: Codec, source: str) -> list[Pair]:
    """(puzzle, label or None) pairs from '-' (stdin), a file path, or else the puzzle text itself.

    A sudoku file holds one puzzle a line or one 9-line grid; a maze or ARC file holds one puzzle (for ARC, a
    task: its test inputs). Errors name the file, and the line where there is one.
    """
    if source.endswith(".npy") and os.path.isfile(source):
        return read_array(codec, source)
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
