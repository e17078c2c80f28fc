"""A one-line progress bar for long conversions, drawn on a terminal only."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    """``bar(done)`` redraws ``label [#####-----] 45% 250/553 MB`` in place. Drawn only
    when ``stream`` is a terminal and the work is big enough to be worth watching (or
    when ``force``); otherwise a no-op."""

    WIDTH = 30

    def __init__(self, total_bytes, label, stream=None, min_bytes=32 << 20, force=False):
        self.stream = stream if stream is not None else sys.stderr
        self.total = max(int(total_bytes), 1)
        self.label = label
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.enabled = force or (tty and total_bytes >= min_bytes)
        self.drawn = False
        self._last = 0.0

    def __call__(self, done):
        if not self.enabled:
            return
        now = time.monotonic()
        if done < self.total and now - self._last < 0.1:
            return
        self._last = now
        frac = min(max(done / self.total, 0.0), 1.0)
        fill = round(frac * self.WIDTH)
        self.stream.write(f"\r{self.label} [{'#' * fill}{'-' * (self.WIDTH - fill)}] "
                          f"{frac:4.0%} {done / 1e6:,.0f}/{self.total / 1e6:,.0f} MB")
        self.stream.flush()
        self.drawn = True

    def close(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
