"""What a render or a preparation says while it runs: stage lines, bars, and the cost line.

The runtime talks through :mod:`logging` at INFO (``iplap.runtime.*``): each stage that takes
seconds says so as it starts, and a render that will take a while says, from its first
frames, how long it will take (:class:`CostLine`). Bars (tqdm, on stderr) come where the
caller asks for them (``show_progress``) and have a total (an estimate where the face video
does not state its length) and so an ETA. ``iplap -q`` silences both.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger("iplap.runtime")

#: A callback ``on_progress(done, total)``: ``total`` is ``None`` where not known.
Progress = Callable[[int, "int | None"], None]

#: A render whose remaining time is estimated above this many seconds says what it will cost.
COST_LINE_SECONDS = 10.0


def frame_bar(iterable: Iterable, enabled: bool, description: str, total: int | None = None):
    """``iterable`` with a tqdm bar of frames on stderr (total and ETA where ``total`` is known)."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=description, total=total, unit="frame", file=sys.stderr, dynamic_ncols=True)


def reporting(frames: Iterable, on_progress: Progress, total: Callable[[], int | None]) -> Iterator:
    """``frames``, calling ``on_progress(done, total())`` after each."""
    done = 0
    for frame in frames:
        yield frame
        done += 1
        on_progress(done, total())


def duration(seconds: float) -> str:
    """``"2 min 10 s"``, ``"45 s"``, ``"1 h 5 min"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class CostLine:
    """Says once, after the first frames (the first render is cold: compiles, first
    allocations), how long the rest of a render will take, where that is worth saying."""

    def __init__(self, total: int, what: str, warm_after: int = 4, span: int = 2):
        self.total, self.what, self.warm_after, self.span = total, what, warm_after, span
        self._warm: tuple[int, float] | None = None
        self.said = False

    def frame_done(self, done: int) -> None:
        if self.said:
            return
        now = time.perf_counter()
        if done == self.warm_after:
            self._warm = (done, now)
        elif self._warm is not None and done >= self._warm[0] + self.span:
            per_frame = (now - self._warm[1]) / (done - self._warm[0])
            left = per_frame * (self.total - done)
            self.said = True
            if left >= COST_LINE_SECONDS:
                log.info("rendering %d frames (%s): about %s more at %.2f s a frame", self.total, self.what,
                         duration(left), per_frame)


__all__ = ["COST_LINE_SECONDS", "CostLine", "Progress", "duration", "frame_bar", "reporting"]
