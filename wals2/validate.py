"""Argument checks with one message form: "`name` should be <what>. Received: name=<value>"."""

from __future__ import annotations

import math
import numbers


def integer(name: str, value, low: int = 1, high: int | None = None, why: str = "") -> int:
    """``int(value)`` for an integer (not a bool) in [low, high] (no upper bound when ``high`` is None).

    Raises:
        ValueError: naming ``name``, the expected range (and ``why``, if given) and the received value.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < low
        or (high is not None and value > high)
    ):
        if high is not None:
            what = f"an integer in [{low}, {high}]"
        else:
            what = {1: "a positive integer", 0: "a non-negative integer"}.get(low, f"an integer >= {low}")
        raise ValueError(f"`{name}` should be {what}{f' ({why})' if why else ''}. Received: {name}={value!r}")
    return int(value)


def real(name: str, value, positive: bool, why: str = "") -> float:
    """``float(value)`` for a finite real number (not a bool), > 0 with ``positive``, else >= 0.

    Raises:
        ValueError: naming ``name``, the expected range (and ``why``, if given) and the received value.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value > 0 if positive else value >= 0)):
        what = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"`{name}` should be {what}{f' ({why})' if why else ''}. Received: {name}={value!r}")
    return float(value)
