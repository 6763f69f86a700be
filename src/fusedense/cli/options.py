"""Argument types the commands share: each checks one flag's value at parse time, so that a bad
value is a one-line usage error naming the flag (exit code 2) before any work starts."""
from __future__ import annotations

import argparse
import math

from .. import threads


class UsageError(Exception):
    """A combination of flags that cannot work; the command reports it like a bad flag."""


def _integer(text, low, high=None, what="an integer"):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text):
    """An integer >= 1."""
    return _integer(text, 1, what="a positive integer")


def non_negative_int(text):
    """An integer >= 0 (e.g. a seed: NumPy's generators refuse negative ones)."""
    return _integer(text, 0, what="a non-negative integer")


def int_in(low, high):
    """An argparse type: an integer in [low, high]."""
    def parse(text):
        return _integer(text, low, high, what=f"an integer in [{low}, {high}]")
    parse.__name__ = f"int_in({low}, {high})"
    return parse


def thread_count(text):
    """A thread count fusedense accepts: 1 to fusedense.threads.max_threads()."""
    return _integer(text, 1, threads.max_threads(), what=f"a thread count in [1, {threads.max_threads()}]")


def real(low=None, low_inclusive=True):
    """An argparse type: a finite float, at least (or above) ``low``."""
    bound = "" if low is None else f" {'>=' if low_inclusive else '>'} {low:g}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (low is not None and (value < low or (value == low and not low_inclusive))):
            raise argparse.ArgumentTypeError(f"expected a finite number{bound}, got {text!r}")
        return value
    parse.__name__ = f"real{bound}"
    return parse


def output_path(text):
    """A file that can be written: its directory exists and is writable (checked now, so that a
    typo fails before training rather than losing the trained model)."""
    from ..io import check_output_path  # the models' module: imported only by commands that write
    try:
        return check_output_path(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("path: ")) from None


def backend_name(text):
    """An installed backend's name, or 'auto'."""
    from .._backends import backends
    if text != "auto" and text not in backends():
        raise argparse.ArgumentTypeError(f"expected 'auto' or an installed backend ({', '.join(backends())}), got {text!r}")
    return text
