"""The server's limits (the work one request may ask for, what one connection may take) and its client error,
without TensorFlow: ``python -m trainer.serve --help`` shows the limits' defaults before TensorFlow loads."""

from __future__ import annotations

import dataclasses
from http import HTTPStatus


class BadRequest(Exception):
    """A client error: HTTP ``status`` with ``message``; ``plain`` asks for a text/plain body (TF1's route)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST, plain: bool = False):
        super().__init__(message)
        self.status = status
        self.plain = plain


@dataclasses.dataclass(frozen=True)
class WorkLimits:
    """Work one request may ask for (more gives 413 naming the limit and its flag).

    Attributes:
        max_instances: instances (users, rows) per request (``--max-instances``).
        max_results: returned (item, score) slots per request, instances x k (``--max-results``).
        max_fold_in_items: fold-in cells per request, fold-in instances x their longest item list
            (``--max-fold-in-items``): the padded [b, L] input of ``fold_in_recommend``.
        max_candidates: candidate cells per request, candidate instances x their longest candidate list
            (``--max-candidates``): the padded [b, C] input of ``recommend_from``.
    """

    max_instances: int = 1000
    max_results: int = 100_000
    max_fold_in_items: int = 100_000
    max_candidates: int = 100_000

    def check_instances(self, count: int) -> None:
        if count > self.max_instances:
            raise BadRequest(
                f"A request should hold at most {self.max_instances} instances (--max-instances). Received: {count}",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )

    def check_results(self, count: int, k: int) -> None:
        _check_cells("instances x k", count, k, self.max_results, "--max-results")

    def check_fold_in(self, count: int, width: int) -> None:
        what = "fold-in instances x their longest item list"
        _check_cells(what, count, width, self.max_fold_in_items, "--max-fold-in-items")

    def check_candidates(self, count: int, width: int) -> None:
        what = "candidate instances x their longest candidate list"
        _check_cells(what, count, width, self.max_candidates, "--max-candidates")


def _check_cells(what: str, count: int, width: int, limit: int, flag: str) -> None:
    """413 when ``count`` x ``width`` (instances x their slots) is above ``limit``, naming it and its ``flag``."""
    if count * width > limit:
        raise BadRequest(
            f"{what} should be at most {limit} ({flag}). Received: {count} x {width} = {count * width}",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )


@dataclasses.dataclass(frozen=True)
class HTTPLimits:
    """What one connection and one request may take.

    Attributes:
        max_connections: open connections (``--max-connections``); past it an idle connection is closed to make
            room, or, when every one is busy, the new one gets 503.
        workers: threads of the heavy lane (``--workers``).
        light_workers: threads of the light lane (as many as the concurrent cheap requests that one batched call
            can join).
        max_body_bytes: request body (``--max-body-bytes``): 413.
        header_timeout_s: a request head, from its first byte (``--header-timeout``): 408.
        body_timeout_s: a request body, once its head is read (``--body-timeout``): 408.
        idle_timeout_s: a connection with no request in progress is closed after this (``--idle-timeout``).
        drain_timeout_s: on SIGTERM, in-flight requests are answered for at most this (``--drain-timeout``).
    """

    max_connections: int = 256
    workers: int = 4
    light_workers: int = 16
    max_body_bytes: int = 4 << 20
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 30.0
    drain_timeout_s: float = 25.0
