"""Prometheus metrics, on the app's own registry so two apps in one process never clash."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
disable_created_metrics()  # type: ignore[no-untyped-call]  # the `_created` series only double what is exported


# The close codes the contract names, and those a server sees when a peer goes without
# one (1005, 1006). A client may close with any of some 4,000 codes: the rest are `other`,
# so that no client can make series without end.
CLOSE_CODES = frozenset({1000, 1001, 1005, 1006, 1009, 1013, 4400, 4401, 4403, 4429})


def close_label(code: int) -> str:
    """The `code` label for a close code: itself when the contract names it, else `other`."""
    return str(code) if code in CLOSE_CODES else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "wsb_connections",
            "Subscribers connected now, by transport.",
            ["transport"],
            registry=self.registry,
        )
        self.events_published = Counter(
            "wsb_events_published", "Events accepted by POST /events.", registry=self.registry
        )
        self.messages_sent = Counter(
            "wsb_messages_sent",
            "WebSocket frames and SSE events delivered, control messages included.",
            registry=self.registry,
        )
        self.disconnects = Counter(
            "wsb_disconnects",
            "Subscriptions ended, by close code: refusals and client closes included.",
            ["code"],
            registry=self.registry,
        )
        self.resumes = Counter(
            "wsb_resumes",
            "Subscriptions with `since`, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "wsb_publish_seconds",
            "From a POST accepted to its events handed to every local subscriber.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.outbox_relayed = Counter(
            "wsb_outbox_relayed", "Outbox rows published.", registry=self.registry
        )
        self.outbox_dead = Counter(
            "wsb_outbox_dead",
            "Outbox rows that failed the event rules, moved to wsb_outbox_dead.",
            registry=self.registry,
        )
        self.outbox_lag = Histogram(
            "wsb_outbox_lag_seconds",
            "From an outbox row's created_at to its event published.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.outbox_up = Gauge(
            "wsb_outbox_up", "1 while the outbox relay reaches Postgres.", registry=self.registry
        )
        self.readers_posts = Gauge(
            "wsb_readers_posts",
            "Posts with at least one reader (a subscriber with post_id) on this instance.",
            registry=self.registry,
        )
        for transport in ("ws", "sse"):
            self.connections.labels(transport)
        for outcome in ("replayed", "resync"):
            self.resumes.labels(outcome)

    def disconnected(self, code: int) -> None:
        self.disconnects.labels(close_label(code)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
