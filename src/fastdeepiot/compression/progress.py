"""Where `compress()` reports its progress: `reporter(progress, total)` gives a context manager with
`message(text)` (a line) and `iteration(i)` (the search's iteration counter).

    progress=True (the default): every line on stderr, under a bar of search iterations (rich; on a
                  terminal the bar stays below the lines and goes at the end, elsewhere only the lines
                  are written)
    progress=False: nothing
    progress=callable: each line passed to it (nothing else)
"""

from __future__ import annotations

from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class _Silent:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def message(self, text: str) -> None:
        pass

    def iteration(self, i: int) -> None:
        pass


class _Callback(_Silent):
    def __init__(self, fn: Callable[[str], Any]):
        self.fn = fn

    def message(self, text: str) -> None:
        self.fn(text)


class _Display(_Silent):
    def __init__(self, total: int):
        self.bar = Progress(TextColumn("compress: search iteration"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True, highlight=False), transient=True)
        self.task = self.bar.add_task("search", total=max(total, 1))

    def __enter__(self):
        if self.bar.console.is_terminal:  # elsewhere (a pipe, a log file, pytest) only the lines
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar.live.is_started:
            self.bar.stop()
        return False

    def message(self, text: str) -> None:
        self.bar.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def iteration(self, i: int) -> None:
        self.bar.update(self.task, completed=i)


def reporter(progress: bool | Callable[[str], Any] | None, total: int):
    """The reporter for `compress(progress=...)`; None is the default (True)."""
    if progress is None or progress is True:
        return _Display(total)
    if progress is False:
        return _Silent()
    if callable(progress):
        return _Callback(progress)
    raise TypeError(f"progress must be True, False or a callable taking one line, got {progress!r}")
