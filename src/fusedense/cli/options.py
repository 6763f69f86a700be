"""Argument types the commands share."""
import argparse


def positive_int(text):
    """An argparse type: an integer >= 1 (else argparse's usage error names the option)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
