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


def fmt_engine_metrics(found: dict[str, float] | None) -> str:
    """A server's own figures of a trial in words: `prefix cache 87% · 0 preempted · queued
    3.1 ms` (those it gave)."""
    if not found:
        return ""
    words = []
    if "prefix_cache_hit_rate" in found:
        words.append(f"prefix cache {found['prefix_cache_hit_rate']:.0%}")
    if "preemptions" in found:
        words.append(f"{found['preemptions']:g} preempted")
    if "queue_time_mean_ms" in found:
        words.append(f"queued {found['queue_time_mean_ms']:.1f} ms")
    return " · ".join(words)
