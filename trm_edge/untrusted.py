"""Reading files a stranger may have made, within a budget decided before the work.

A bundle, a report or a config from elsewhere can be a FIFO (opening it blocks forever), a device (`/dev/zero`
never ends), JSON nested 100,000 deep (the parser's recursion fails with a traceback) or an npz whose few
compressed bytes expand to gigabytes. So every such file is opened without blocking and refused unless it is a
regular file, read up to a size limit, its JSON nesting measured before parsing, and an npz member's declared
shape and size checked against what the caller expects before a byte of it is allocated. Each refusal is one
TRMEdgeError line naming the file. numpy and the stdlib only: a device reads bundles with this.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from trm_edge.errors import TRMEdgeError

MAX_JSON_BYTES = 16 << 20  # our manifests, configs and reports are kilobytes; a bench report a few hundred
MAX_JSON_DEPTH = 64  # ours nest 6 deep
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _os_error(path: Path, e: OSError, what: str) -> TRMEdgeError:
    if isinstance(e, FileNotFoundError):
        return TRMEdgeError(f"{path}: no such {what}")
    return TRMEdgeError(f"{path}: cannot read it ({e.strerror or e})")


def check_regular(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` if it is a regular file (links followed), else one line naming what it is; never opens it."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise _os_error(p, e, what) from None
    if not stat.S_ISREG(mode):
        raise TRMEdgeError(f"{p}: is {kind_of(mode)}, not a {what}")
    return p


def read_limited(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Opened non-blocking and checked on the open descriptor,
    so a FIFO swapped in after a check cannot hang the read."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise _os_error(p, e, what) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise TRMEdgeError(f"{p}: is {kind_of(mode)}, not a {what}")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise _os_error(p, e, what) from None
    if len(data) > limit:
        raise TRMEdgeError(f"{p}: larger than {limit:,} bytes, far more than a {what} holds; refused")
    return data


def json_depth(text: str) -> int:
    """How deep brackets nest outside strings (measured without recursion, so any depth is safe to measure)."""
    skeleton = np.frombuffer(_STRING.sub("", text).encode("utf-8", "replace"), np.uint8)
    steps = np.isin(skeleton, (ord("["), ord("{"))).astype(np.int64) - np.isin(skeleton, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def parse_json(data: bytes | str, origin: object, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text from an untrusted source: UTF-8, at most `max_depth` deep, else one line naming `origin`."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
        raise TRMEdgeError(f"{origin}: not a {what}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                           f"{e.start})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise TRMEdgeError(f"{origin}: not a {what}: JSON nested {depth} deep (at most {max_depth}); refused")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TRMEdgeError(f"{origin}: not a {what}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})") \
            from None


def load_json(path: str | os.PathLike, what: str, limit: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
              ) -> Any:
    """A JSON file within the size and depth budget."""
    return parse_json(read_limited(path, limit, what), path, what, max_depth)


def load_arrays(path: str | os.PathLike, want: dict[str, tuple[int, ...]], what: str = "array file"
                ) -> dict[str, np.ndarray]:
    """Named float arrays of known shapes from an .npz, as float32. Each member's .npy header (shape, dtype) and the
    zip's declared size are checked before its data is read, and no more than the expected bytes are ever read, so
    a compressed bomb or a header declaring 10^12 values costs nothing."""
    expected = sum(8 * int(np.prod(s)) for s in want.values())
    data = read_limited(path, expected + 4096 * (len(want) + 1), what)  # headers and the zip's directory
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return {k: _member(z, k, shape) for k, shape in want.items()}
    except zipfile.BadZipFile as e:
        raise TRMEdgeError(f"{path}: not a {what} (not an npz: {e})") from None
    except (KeyError, ValueError, EOFError, NotImplementedError, RuntimeError) as e:
        raise TRMEdgeError(f"{path}: not a {what} ({str(e)[:120] or type(e).__name__}); re-export it") from None


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from an .npy stream's header, the stream left at the data."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f".npy format version {version}")
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return header(f)


def _member(z: zipfile.ZipFile, key: str, shape: tuple[int, ...]) -> np.ndarray:
    info = z.getinfo(f"{key}.npy")  # KeyError: missing
    with z.open(info) as f:
        got, fortran, dtype = _npy_header(f)
        if tuple(got) != tuple(shape) or dtype.kind != "f" or dtype.itemsize > 8:
            raise ValueError(f"{key} is {dtype} of shape {tuple(got)}, expected float of shape {tuple(shape)}")
        n = dtype.itemsize * int(np.prod(shape))
        if info.file_size > n + 4096:
            raise ValueError(f"{key}: the zip declares {info.file_size:,} bytes for {n:,} bytes of values")
        raw = f.read(n + 1)
    if len(raw) != n:
        raise ValueError(f"{key}: {len(raw):,} bytes of values, expected {n:,}")
    arr = np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")
    return arr.astype(np.float32)


def read_stdin(limit: int) -> bytes:
    """Standard input up to `limit` + 1 bytes; closed or unreadable stdin is one line."""
    stream = sys.stdin
    if stream is None:
        raise TRMEdgeError("<stdin>: standard input is closed; pipe the puzzles in or give a file")
    with contextlib.suppress(AttributeError):
        stream = stream.buffer  # an embedding host may give a text-only stdin
    try:
        data = stream.read(limit + 1)
    except (OSError, ValueError) as e:
        raise TRMEdgeError(f"<stdin>: cannot read standard input ({getattr(e, 'strerror', None) or e})") from None
    return data if isinstance(data, bytes) else data.encode()


def check_npy(path: str | os.PathLike, what: str = "array file") -> tuple[tuple[int, ...], np.dtype]:
    """An .npy file's shape and dtype, refused unless its data is exactly as long as its header declares (a
    header declaring 10^12 values over a few bytes would make numpy allocate them all first)."""
    p = check_regular(path, what)
    try:
        with open(p, "rb") as f:
            shape, _, dtype = _npy_header(f)
            start = f.tell()
    except OSError as e:
        raise _os_error(p, e, what) from None
    except (ValueError, EOFError) as e:
        raise TRMEdgeError(f"{p}: not a {what} ({str(e)[:120]})") from None
    n = dtype.itemsize * int(np.prod(shape, dtype=object))
    if dtype.hasobject or p.stat().st_size - start != n:
        raise TRMEdgeError(f"{p}: not a {what}: its header declares {dtype} of shape {tuple(shape)} ({n:,} bytes), "
                           f"the file holds {p.stat().st_size - start:,}")
    return tuple(shape), dtype
