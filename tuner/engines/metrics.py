"""A server's own metrics: what it says of a run, beside what the client measured.

vLLM's OpenAI-compatible server (and others built on Prometheus) answers `GET /metrics` with
counters in Prometheus' text format. The server engines scrape it before and after each timed
run and keep, from the two, why a configuration is slow:

- `prefix_cache_hit_rate`: prompt tokens found in the prefix cache, as a share of those looked
  up (`vllm:prefix_cache_hits` / `vllm:prefix_cache_queries`);
- `preemptions`: requests preempted for KV-cache room (`vllm:num_preemptions`);
- `queue_time_mean_ms`: the mean time a request waited before it was scheduled
  (`vllm:request_queue_time_seconds`).

A figure whose counters the server does not expose is left out; a server with no `/metrics`
(`transformers serve`, most others) gives none, and the run goes on.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Prometheus sample names (counters as exposed, with `_total`) read from a scrape.
HITS = "vllm:prefix_cache_hits_total"
QUERIES = "vllm:prefix_cache_queries_total"
PREEMPTIONS = "vllm:num_preemptions_total"
QUEUE_SUM = "vllm:request_queue_time_seconds_sum"
QUEUE_COUNT = "vllm:request_queue_time_seconds_count"
WATCHED = (HITS, QUERIES, PREEMPTIONS, QUEUE_SUM, QUEUE_COUNT)
SCRAPE_TIMEOUT_S = 5.0


def parse(text: str) -> dict[str, float]:
    """The watched samples of a Prometheus text exposition, summed over their label sets
    (engines, models); nothing where the text does not parse."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in WATCHED:
                    found[sample.name] = found.get(sample.name, 0.0) + float(sample.value)
    except ValueError:
        return {}
    return found


def scrape(base_url: str) -> dict[str, float] | None:
    """The server's watched counters now; None where it has no `/metrics` that answers."""
    import httpx

    try:
        reply = httpx.get(f"{base_url}/metrics", timeout=SCRAPE_TIMEOUT_S)
    except httpx.HTTPError:
        return None
    if reply.status_code != 200:
        return None
    return parse(reply.text)


def run_metrics(
    before: Mapping[str, float] | None, after: Mapping[str, float] | None
) -> dict[str, float] | None:
    """The figures of one run (see the module's docstring), from the scrapes around it."""
    if before is None or after is None:
        return None

    def delta(name: str) -> float | None:
        if name not in before or name not in after:
            return None
        return max(0.0, after[name] - before[name])

    found: dict[str, float] = {}
    hits, queries = delta(HITS), delta(QUERIES)
    if hits is not None and queries:
        found["prefix_cache_hit_rate"] = round(hits / queries, 4)
    preempted = delta(PREEMPTIONS)
    if preempted is not None:
        found["preemptions"] = preempted
    waited, count = delta(QUEUE_SUM), delta(QUEUE_COUNT)
    if waited is not None and count:
        found["queue_time_mean_ms"] = round(1000 * waited / count, 3)
    return found or None
