"""Outputs that appear whole or not at all, and never at the cost of a folder we did not make.

Every directory trm-edge writes carries a marker file naming what it is (a bundle, a model, a report, a
training run...). A command may replace its output only if it is missing, empty, or marked as the same
kind; anything else is refused up front (`claim`) and again at the moment of the swap. Temporary folders
are private while written and get the umask's permissions once complete, carry the marker from their first
instant, and name the writing process, so one left by a killed process is recognised as ours and removed by
the next write to the same target; a user's folder that merely looks alike is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path

from trm_edge.errors import TRMEdgeError
from trm_edge.untrusted import parse_json, read_limited

MARKER = ".trm-edge"
_TMP = re.compile(r"^\.(?P<name>.+)\.trm-edge-(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def read_marker(path: Path) -> str | None:
    """The kind of trm-edge output `path` holds, or None if it is not one of ours."""
    try:
        doc = parse_json(read_limited(path / MARKER, 4096, "marker"), path / MARKER, "marker")
    except TRMEdgeError:
        return None
    return doc.get("kind") if isinstance(doc, dict) and isinstance(doc.get("kind"), str) else None


def mark(path: Path, kind: str) -> None:
    (path / MARKER).write_text(json.dumps({"kind": kind, "by": "trm-edge"}) + "\n")


@contextlib.contextmanager
def os_errors(out: Path):
    """A full disk, a read-only mount or a missing permission is one line naming the path, not a traceback."""
    try:
        yield
    except OSError as e:
        raise TRMEdgeError(f"{e.filename or out}: {e.strerror or e} (writing {out})") from None


def claim(path: str | os.PathLike, kind: str) -> Path:
    """Refuse (exit 2, one line, before any work) an output path that holds something we must not replace:
    a file, a non-empty folder without our marker, or one of our outputs of another kind."""
    out = Path(path)
    if out.name in ("", ".", ".."):  # '.', '..', '/': an output is replaced whole, by a rename of its own name
        raise TRMEdgeError(f"{str(path) or 'an empty path'}: name a directory of its own for the {kind} (e.g. "
                           f"{Path(path, 'trm-' + kind.replace(' ', '-'))}); trm-edge replaces its output whole")
    with os_errors(out):
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise TRMEdgeError(f"{out}: exists and is not a directory; choose another output path")
        if not out.exists():
            base = next(p for p in out.absolute().parents if p.exists())
            if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
                raise TRMEdgeError(f"{out}: cannot be created: {base} is not a writable directory")
            return out
        if not any(out.iterdir()):
            return out
    found = read_marker(out)
    if found == kind:
        return out
    what = f"a trm-edge {found}" if found else "files trm-edge did not write"
    raise TRMEdgeError(f"{out}: already holds {what}; refusing to replace it with a {kind}: choose a new or empty "
                       "output directory")


def claim_live(path: str | os.PathLike, kind: str) -> Path:
    """For outputs written in place over time (a training run, a dataset): claim, then create and mark."""
    out = claim(path, kind)
    with os_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        if read_marker(out) != kind:
            mark(out, kind)
    return out


def umask() -> int:
    """The process umask, read without changing it where the OS allows (changing it races with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _umask_modes(root: Path) -> None:
    """Give everything under root the modes the umask allows: some writers (safetensors) create 0600 files,
    which another user or a web server on the device then cannot read."""
    mask = umask()
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            full = p.is_dir() or p.stat().st_mode & 0o100  # directories and executables keep their x bits
            p.chmod((0o777 if full else 0o666) & ~mask)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: Path) -> list[Path]:
    """Remove temporaries beside `out` left by dead trm-edge processes: the name pattern, a dead pid and our
    marker (or nothing at all, if killed before the marker was written) must all hold."""
    removed = []
    with contextlib.suppress(OSError):
        for p in out.parent.iterdir():
            m = _TMP.match(p.name)
            if not m or m["name"] != out.name or p.is_symlink() or not p.is_dir() or _pid_alive(int(m["pid"])):
                continue
            if read_marker(p) is None and any(p.iterdir()):
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _sibling(out: Path, tag: str) -> Path:
    """A sibling name no one uses, naming this process (see clean_stale)."""
    return out.with_name(f".{out.name}.trm-edge-{tag}-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def interruptions(handler):
    """`handler(sig, restore)` takes SIGINT/SIGTERM meanwhile (main thread only: elsewhere signals cannot be
    handled); `restore()` puts back the handlers that were there before, as leaving does. A signal the process
    ignores stays ignored (a shell starts background jobs with SIGINT ignored, so that a Ctrl-C meant for the
    foreground job does not reach them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved: dict = {}

    def restore() -> None:
        for s, previous in saved.items():
            signal.signal(s, previous)

    saved.update({s: signal.signal(s, lambda sig, frame: handler(sig, restore)) for s in (signal.SIGINT,
                                                                                          signal.SIGTERM)
                  if signal.getsignal(s) is not signal.SIG_IGN})
    try:
        yield
    finally:
        restore()


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT/SIGTERM wait until the swap is done (a Ctrl-C between two renames would lose both copies): they
    are recorded meanwhile and raised again, to their own handlers, once the swap is over."""
    got: list[int] = []
    try:
        with interruptions(lambda sig, restore: got.append(sig)):
            yield
    finally:
        for s in dict.fromkeys(got):
            signal.raise_signal(s)


@contextlib.contextmanager
def stop_at_a_safe_point(what: str):
    """For a long job that can save its progress (training): the first SIGINT/SIGTERM only asks it to stop at its
    next safe point (it polls the callable yielded), so an interruption costs no work; a second one stops at once,
    through the handlers that were there before."""
    got: list[int] = []

    def ask(sig, restore) -> None:
        got.append(sig)
        restore()
        print(f"trm-edge: stopping after this step to save {what} (again: stop at once)", file=sys.stderr)

    with interruptions(ask):
        yield lambda: bool(got)


def atomic_dir(out_dir: str | os.PathLike, write, kind: str) -> Path:
    """Run `write(tmp)` in a marked temporary sibling, then swap it into place: all or nothing, and only
    over a missing, empty or same-kind output."""
    out = claim(out_dir, kind)
    with os_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out)
        tmp = _sibling(out, "tmp")
        tmp.mkdir(0o700)  # private while being written; _umask_modes opens it as the umask allows
    try:
        with os_errors(out):
            mark(tmp, kind)
            write(tmp)
            _umask_modes(tmp)
            with _signals_deferred():
                claim(out, kind)  # again: something may have appeared while we worked
                if out.exists():
                    old = _sibling(out, "old")
                    os.replace(out, old)
                    os.replace(tmp, out)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
