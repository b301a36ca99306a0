"""One access-log line per request and Prometheus metrics (``prometheus_client``), as an ASGI middleware.

The access line goes to the ``serving.access`` logger, in ``trainer.logs``' format::

    2026-12-03T12:00:00.123Z INFO serving.access: POST '/predict' 200 3.2 ms route=predict

(the path as a Python literal, so that a client cannot write control characters into the log).

Metrics (``GET /metrics``, Prometheus' text format), labelled by route name (never by raw path, whose values a
client chooses):

- ``wals2_requests_total{route, status}``: answered requests;
- ``wals2_request_duration_seconds{route}``: a histogram of the time from the request head to the last byte of
  the answer;
- ``wals2_requests_in_flight``: requests being answered;
- ``wals2_served_model_version``: the version being served.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

access_logger = logging.getLogger("serving.access")

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_LOGGED_PATH = 120


class Metrics:
    """The server's metrics, in a registry of their own (``registry``)."""

    def __init__(self, models):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wals2_requests", "Answered HTTP requests.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "wals2_request_duration_seconds",
            "Time from a request's head to the last byte of its answer.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("wals2_requests_in_flight", "Requests being answered.", registry=self.registry)
        version = Gauge("wals2_served_model_version", "The model version being served.", registry=self.registry)
        version.set_function(lambda: float(models.current.version))

    def exposition(self) -> tuple[bytes, str]:
        """(body, content type) of ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_of(scope) -> str:
    """The label of the request's route: ``scope["wals2.route"]`` if an endpoint set one, else the route's name."""
    if "wals2.route" in scope:
        return scope["wals2.route"]
    route = scope.get("route")
    return getattr(route, "name", None) or "unmatched"


class Observe:
    """ASGI middleware: times each HTTP request, counts it and logs one access line (``access_log``)."""

    def __init__(self, app, metrics: Metrics, access_log: bool = True):
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]
        done = [False]

        def finish() -> None:
            if done[0]:
                return
            done[0] = True
            seconds = time.perf_counter() - started
            route = route_of(scope)
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(seconds)
            if self.access_log:
                path = scope.get("path", "")
                if len(path) > MAX_LOGGED_PATH:
                    path = path[: MAX_LOGGED_PATH - 3] + "..."
                access_logger.info(
                    "%s %r %d %.1f ms route=%s", scope.get("method"), path, status[0], seconds * 1000, route
                )

        async def observed_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.in_flight.dec()
            finish()
