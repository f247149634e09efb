"""The figures as Prometheus metrics on `/metrics`.

A custom collector turns the latest `Snapshot` into metric families at scrape time, so a scrape
(served from prometheus_client's own HTTP thread) only reads an immutable object and never
races the consumer that builds the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from projections.analytics.figures import Snapshot
from projections.analytics.windows import Quantiles


class SnapshotCollector(Collector):
    def __init__(self, latest: Callable[[], Snapshot]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[Metric]:
        s = self._latest()
        yield _labelled(CounterMetricFamily, "steno_events", "Events read from the log", "type", s.events_total)
        yield CounterMetricFamily("steno_messages", "User messages submitted", s.messages_total)
        yield GaugeMetricFamily("steno_messages_per_minute", "Messages submitted per minute", s.messages_per_minute)
        yield _labelled(CounterMetricFamily, "steno_responses", "Replies that ended", "outcome", s.responses_total)
        yield _labelled(
            GaugeMetricFamily,
            "steno_responses_per_minute",
            "Replies that ended per minute",
            "outcome",
            s.responses_per_minute,
        )
        yield _labelled(
            CounterMetricFamily, "steno_blocked_messages", "Messages blocked by moderation", "category", s.blocked_total
        )
        yield _labelled(
            GaugeMetricFamily,
            "steno_blocked_ratio",
            "Share of recently moderated messages blocked",
            "category",
            s.blocked_ratio,
        )
        yield _quantiles("steno_ttft_seconds", "Time from submission to first token of recent replies", s.ttft_s)
        yield _quantiles("steno_tokens_per_second", "Decode rate of recently ended replies", s.tokens_per_s)
        yield GaugeMetricFamily("steno_active_conversations", "Conversations seen lately", s.active_conversations)
        yield GaugeMetricFamily("steno_analytics_open_responses", "Replies still being joined", s.open_responses)


def _labelled(
    kind: type[CounterMetricFamily | GaugeMetricFamily], name: str, doc: str, label: str, values: Mapping[str, float]
) -> Metric:
    family = kind(name, f"{doc}, by {label}", labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _quantiles(name: str, doc: str, by_model: dict[str, Quantiles]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, f"{doc} (p50, p95 over the window)", labels=["model", "quantile"])
    for model, quantiles in by_model.items():
        family.add_metric([model, "0.5"], quantiles.p50)
        family.add_metric([model, "0.95"], quantiles.p95)
    return family


def serve_metrics(latest: Callable[[], Snapshot], host: str, port: int) -> tuple[WSGIServer, Thread]:
    """Serve `/metrics` on its own thread; port 0 picks a free one (server.server_port says which)."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(latest))
    return start_http_server(port, addr=host, registry=registry)
