"""Progress of a long loop in its rule's log: count, rate and ETA at a steady interval.

A job on a cluster is followed through its log (``tail -f logs/...``); tqdm's bar is
made for a terminal and writes carriage returns, so this logs one plain line at most
every ``interval`` seconds (and the last step), through the module's logger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """``update(n)`` after each piece of work; logs ``what: done/total (pct), rate unit/s, ETA``.

    ``clock`` is injectable for tests; ``interval`` is the least number of seconds between lines.
    """

    def __init__(self, what: str, total: int, *, unit: str = "it", interval: float = 30.0,
                 logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.unit, self.interval = what, int(total), unit, float(interval)
        self.log, self.clock = logger or log, clock
        self.done = 0
        self.start = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.interval or self.done >= self.total:
            self.last = now
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((self.clock() if now is None else now) - self.start, 1e-9)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        eta = _duration(left / rate) if rate > 0 else "unknown"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.what}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), {rate:.3g} {self.unit}/s, "
                f"elapsed {_duration(elapsed)}, ETA {eta}")
