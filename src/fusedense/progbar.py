"""The training progress display of ``fit(verbose=...)``, Keras's format.

verbose=1 on a terminal (or in Jupyter): a bar updated in place (carriage return) at most
``interval`` seconds apart::

     812/1875 [============>.................] - ETA: 1s - loss: 0.5123 - accuracy: 0.8203

then, at the epoch's end, ``1875/1875 [==============================] - 2s 1ms/step - loss: ...``.
verbose=2, or verbose=1 when the output is not a terminal (a log file, CI), one line per epoch:
``1875/1875 - 2s - 1ms/step - loss: ...``.

Cost: the training loop asks ``due(step)``, one integer comparison per batch; the clock is read
only every ``stride`` batches, a stride re-estimated from the measured step rate so that it is
read about 20 times a second, and only a due update formats and writes a line.
"""
from __future__ import annotations

import os
import sys
import time

__all__ = ["Progbar", "is_interactive"]


def is_interactive(stream=None) -> bool:
    """True on a terminal or in a Jupyter kernel (where Keras also redraws in place)."""
    stream = sys.stdout if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty or "ipykernel" in sys.modules or "PYCHARM_HOSTED" in os.environ


def format_logs(logs) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


def _format_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{int(round(seconds))}s"


def _per_step(seconds, steps):
    per = seconds / max(steps, 1)
    return f"{per:.0f}s/step" if per >= 1 else f"{per * 1e3:.0f}ms/step" if per >= 1e-3 else f"{per * 1e6:.0f}us/step"


class Progbar:
    """One epoch's display: ``target`` steps; ``live``: redraw in place (verbose=1 on a terminal)."""

    def __init__(self, target, live, width=30, interval=0.1, stream=None):
        self.target, self.live, self.width, self.interval = int(target), bool(live), width, interval
        self.stream = sys.stdout if stream is None else stream
        self.start = self._last = time.perf_counter()
        self._check_at = 1 if live else self.target + 1  # the next step at which the clock is read
        self._stride = 1
        self._drawn_width = 0

    def due(self, step) -> bool:
        """Whether to call ``update`` after ``step`` steps (the per-batch cost: one comparison)."""
        return step >= self._check_at

    def update(self, step, logs_fn):
        """Redraws if ``interval`` has passed since the last draw; ``logs_fn()`` gives the running logs."""
        now = time.perf_counter()
        rate = step / max(now - self.start, 1e-9)
        self._stride = max(1, int(rate * self.interval / 2))
        self._check_at = step + self._stride
        if now - self._last < self.interval:
            return
        self._last = now
        eta = (self.target - step) * (now - self.start) / step
        self._draw(f"{self._bar(step)} - ETA: {_format_time(eta)}", logs_fn())

    def finish(self, logs):
        """The epoch's closing line (the bar completed in place, or the one line of verbose=2)."""
        elapsed = time.perf_counter() - self.start
        if self.live:
            self._draw(f"{self._bar(self.target)} - {_format_time(elapsed)} {_per_step(elapsed, self.target)}", logs)
            self.stream.write("\n")
        else:
            self.stream.write(f"{self.target}/{self.target} - {_format_time(elapsed)} - "
                              f"{_per_step(elapsed, self.target)}" + (f" - {format_logs(logs)}" if logs else "") + "\n")
        self.stream.flush()

    def _bar(self, step):
        digits = len(str(self.target))
        done = int(self.width * step / self.target)
        bar = "=" * done + (">" + "." * (self.width - done - 1) if done < self.width else "")
        return f"{step:{digits}d}/{self.target} [{bar}]"

    def _draw(self, head, logs):
        line = head + (f" - {format_logs(logs)}" if logs else "")
        pad = " " * max(0, self._drawn_width - len(line))  # blank what a longer previous line left
        self._drawn_width = len(line)
        self.stream.write("\r" + line + pad)
        self.stream.flush()
