"""Progress bars that cost nothing when off (tqdm is imported only when one is drawn).

On a terminal a tqdm bar is drawn; when the output is not a terminal (CI logs, ``> file``),
one plain line is printed every ~10% instead, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable


class PlainProgress:
    """tqdm's interface (iteration, update, set_postfix, close) printing a line per ~10%."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 stream=None, **_):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.postfix = total, 0, ""
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self._next_tenth = 1

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total and self.n * 10 >= self._next_tenth * self.total:
            self._next_tenth = self.n * 10 // self.total + 1
            self._line()

    def set_postfix(self, values=None, refresh: bool = False, **kwargs) -> None:
        values = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self) -> None:
        elapsed = time.perf_counter() - self.started
        share = f"{100 * self.n / self.total:3.0f}% " if self.total else ""
        extra = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {share}{self.n}/{self.total or '?'} {self.unit} [{elapsed:.0f} s]{extra}",
              file=self.stream, flush=True)

    def close(self) -> None:
        if not self.total and self.n:
            self._line()
        self.total = self.total or self.n
        self._next_tenth = 11  # nothing more after closing


def progress(iterable: Iterable | None, enabled: bool, **options):
    """``iterable`` wrapped in a progress bar when ``enabled`` (``options`` go to tqdm): a
    tqdm bar on a terminal, :class:`PlainProgress` lines otherwise."""
    if not enabled:
        return iterable
    if not _is_terminal():
        return PlainProgress(iterable, **options)
    from tqdm import tqdm

    return tqdm(iterable, **options)


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
