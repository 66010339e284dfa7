"""Progress of the long commands (export, eval, bench, web, android, train, finetune, data build), one way for all.

On a terminal a live display shows the stage and, where the work counts, a bar, the count and the time left; it
vanishes at the end, so results and errors read as without it. Elsewhere (a file, a pipe, CI) the same news comes
as plain timestamped lines on stderr: one at each stage change and at most one every EVERY seconds while a stage
runs, so a log shows the work moving without a line per item. `quiet` silences both.

The work reports through the plain callbacks it already takes: `status(text)` for a stage (export), `advance(n)`
(eval) and `progress(what, done, total)` (bench), `tracker(what)` to wrap an iterable (data build). Torch-free.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

EVERY = 10.0  # seconds between the lines of a running stage, outside a terminal
_COUNT = re.compile(r" (\d+)/(\d+)\b")  # a count in a status text: export's int8 guard sends "int8 300/512 held-out"


class _Counted(ProgressColumn):
    """A column shown only while the stage has a total (rich would show a pulsing bar and -:--:-- without one)."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self.column = column

    def render(self, task: Task) -> Text:
        return self.column.render(task) if task.total is not None else Text("")


def duration(seconds: float) -> str:
    """Rounded as a person reads a time left: 45 s, 3 min, 1 h 05 min."""
    s = round(seconds)
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def counting(status: Callable[[str], None], head: str, tail: str, done: int = 0, total: int = 0
             ) -> Callable[[int], None]:
    """`advance(n)` for work of minutes that reports through a status callback: the status line counts what is done
    ("HEAD 300/512 TAIL"), which a Reporter shows as the stage's count with the time left."""
    def advance(n: int) -> None:
        nonlocal done
        done += n
        status(f"{head} {done}/{total} {tail}")

    advance(0)
    return advance


class Reporter:
    """The progress of one command: a context manager around its work, whose methods are the work's callbacks.

    `stage`, when given, is shown from the start on a terminal; outside one its line waits for the work's first
    news (or EVERY seconds), so an error in the input, found before any work, stays the only line on stderr.
    `clock` is time.time, replaceable in tests."""

    def __init__(self, command: str, console: Console, quiet: bool = False, stage: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.command, self.console, self.quiet, self.clock = command, console, quiet, clock
        self.live = console.is_terminal and console.is_interactive
        self.stage, self.done, self.total = stage, 0, None
        self._shown = False  # the current stage has had its line
        self._last = self._began = clock()  # the last line; the start of the stage (or of its count)
        self._from = 0  # the count at _began: the time left is measured from there
        self._lock = threading.Lock()  # outside a terminal a thread prints the lines of a stage that sends no news
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Progress | None = None
        self._task = TaskID(0)

    def __enter__(self) -> Reporter:
        if self.quiet:
            return self
        if self.live:
            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), _Counted(BarColumn()),
                                 TextColumn("{task.fields[count]}"), _Counted(TimeRemainingColumn()),
                                 TimeElapsedColumn(), console=self.console, transient=True)
            self._task = self._bar.add_task(self.stage or self.command, total=None, count="")
            self._bar.start()
        else:
            self._thread = threading.Thread(target=self._beat, daemon=True, name="trm-edge progress")
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self._bar:
            self._bar.stop()

    def status(self, text: str) -> None:
        """A stage; a count inside the text ("int8 300/512 held-out") is shown as the stage's count, so its updates
        are not stage changes."""
        m = _COUNT.search(text)
        if m:
            self.progress(text[:m.start(1)] + text[m.start(2):], int(m[1]), int(m[2]))
        else:
            self.progress(text, 0, None)

    def advance(self, n: int) -> None:
        """`n` more done in the current stage."""
        self.progress(self.stage or self.command, self.done + n, self.total)

    def progress(self, what: str, done: int, total: int | None) -> None:
        """Stage `what` has `done` of `total` (None: no total)."""
        with self._lock:
            now = self.clock()
            changed = what != self.stage
            fresh = done < self.done or (changed and (total is None or total != self.total))  # a new count begins
            if fresh:
                self._began, self._from = now, done
            self._shown = self._shown and not changed
            self.stage, self.done, self.total = what, done, total
            if self._bar:
                if fresh:  # a new task: rich keeps a task's total and pace through updates
                    self._bar.remove_task(self._task)
                    self._task = self._bar.add_task(what, total=total, completed=done, count=self._count())
                else:
                    self._bar.update(self._task, description=what, completed=done, count=self._count())
            elif not self._shown or now - self._last >= EVERY:
                self._line(now)

    def tracker(self, what: str) -> Callable[[Iterable, int], Iterator]:
        """`track(items, total)`: the items, counted as stage `what` (from the first one asked for)."""
        def track(items: Iterable, total: int) -> Iterator:
            self.progress(what, 0, total)
            for i, item in enumerate(items, 1):
                yield item
                self.progress(what, i, total)
        return track

    def note(self, text: str) -> None:
        """A line the work logs as it goes (training records), above the live display; silenced with the rest."""
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def left(self, now: float) -> float | None:
        """Seconds left at the pace since the count began; None before there is a pace, or after the end."""
        if self.total is None or not self._from < self.done < self.total or now <= self._began:
            return None
        return (self.total - self.done) * (now - self._began) / (self.done - self._from)

    def _count(self) -> str:
        if self.total is not None:
            return f"{self.done}/{self.total}"
        return f"{self.done} done" if self.done else ""

    def _line(self, now: float) -> None:
        """`12:03:14 bench: ort/fp32/step fixed:16: 32/64, ~10 s left`; a stage without a count says how long it has
        run from its second line on."""
        if self.quiet or self.stage is None:
            return
        news = self._count() or (f"{duration(now - self._began)} so far" if self._shown else "")
        left = self.left(now)
        self.console.print(f"{time.strftime('%H:%M:%S', time.localtime(now))} {self.command}: {self.stage}"
                           + (f": {news}" if news else "") + (f", ~{duration(left)} left" if left is not None else ""),
                           markup=False, highlight=False, soft_wrap=True)
        self._shown, self._last = True, now

    def heartbeat(self) -> None:
        """The line of a stage that has run EVERY seconds since the last one without news (a conversion, a
        verification): the log still shows that the work goes on."""
        with self._lock:
            now = self.clock()
            if now - self._last >= EVERY:
                self._line(now)

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            self.heartbeat()
