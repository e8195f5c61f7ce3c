"""How knob values, knob sets and rates read in every message, table and report."""

from __future__ import annotations

from collections.abc import Mapping

Value = bool | int | float | str


def fmt_value(value: Value) -> str:
    """A knob value as the user types it: booleans lower-case (`true`), the rest as is."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def fmt_knobs(knobs: Mapping[str, Value]) -> str:
    """`name=value` pairs, space-separated."""
    return " ".join(f"{k}={fmt_value(v)}" for k, v in knobs.items())


def fmt_rate(value: float | None) -> str:
    """A tok/s figure with one decimal and thousands separators; `-` when there is none."""
    return "-" if value is None else f"{value:,.1f}"
