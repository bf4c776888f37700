"""What the demo says while it runs: numbered steps, one line each, and a progress bar for the replay that redraws
in place on a terminal (and prints one line per day otherwise, so that a log shows how it went)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import IO

WIDTH = 24


@dataclass(frozen=True, slots=True)
class Counts:
    """How far the bank's events have got: into the spools, acknowledged to the agents, stored by the collector,
    evaluated by its rule worker; and the alerts stored so far."""

    written: int = 0
    shipped: int = 0
    stored: int = 0
    evaluated: int = 0
    alerts: int = 0


class Progress:
    def __init__(self, out: IO[str], steps: int) -> None:
        self.out, self.steps, self.n = out, steps, 0
        self.tty = out.isatty()
        self._drawn = False
        self.started = time.monotonic()

    def step(self, name: str, detail: str) -> None:
        self._end_bar()
        self.n += 1
        self.out.write(f"[{self.n}/{self.steps}] {name:<10} {detail}\n")
        self.out.flush()

    def bar(self, name: str, label: str, counts: Counts, total: int, *, line: bool = False) -> None:
        """Redraw the bar (on a terminal); with `line`, also leave it as a line of its own (day done)."""
        if not (self.tty or line):
            return
        done = counts.evaluated
        filled = WIDTH * done // max(total, 1)
        stored = WIDTH * counts.stored // max(total, 1) - filled
        bar = "#" * filled + "=" * max(stored, 0)
        self._draw(f"[{self.n + 1}/{self.steps}] {name:<10} {label:<10} [{bar:-<{WIDTH}}] shipped {counts.shipped:,}"
                   f"/{total:,}  stored {counts.stored:,}  evaluated {counts.evaluated:,}  alerts {counts.alerts}",
                   line)

    def count(self, name: str, label: str, done: int, total: int, what: str, *, line: bool = False) -> None:
        """A bar of one count (such as statements run), drawn like `bar`."""
        if not (self.tty or line):
            return
        bar = "#" * (WIDTH * done // max(total, 1))
        self._draw(f"[{self.n + 1}/{self.steps}] {name:<10} {label:<10} [{bar:-<{WIDTH}}] {what} {done:,}/{total:,}",
                   line)

    def _draw(self, text: str, line: bool) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + text + ("\n" if line else ""))
            self._drawn = not line
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def _end_bar(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self._drawn = False
