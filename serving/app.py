"""The Starlette application: the Vertex AI, TF1 and TF Serving REST routes over the served model.

Every answer is JSON (TF1's three plain-text 400s aside): a client error is ``{"error": ...}`` with its 4xx, an
unknown route 404, a known route with the wrong method 405 with ``Allow``, a body over ``max_body_bytes`` 413, a
body slower than ``body_timeout_s`` 408, a bug 500 (logged with its traceback).

The model is called in one of two executor lanes, so that heavy requests cannot starve cheap ones:

- ``light``: requests whose estimated cost (``_cost``: returned slots plus the ids they send) is at most
  ``LIGHT_COST`` and whose body is at most ``LIGHT_BODY_BYTES``, such as one user's top 10;
- ``heavy``: the rest, ``workers`` threads.

Each lane has its own batcher (``serving.model.LANE``). Health, status and metadata need no model call and are
answered on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from serving import requests, tf_serving
from serving.limits import BadRequest, HTTPLimits, WorkLimits
from serving.model import LANE, Recommender, brief, load_json
from serving.observe import Metrics, Observe

logger = logging.getLogger(__name__)

LIGHT_COST = 2000
LIGHT_BODY_BYTES = 8 << 10
TF1_READINESS_ROUTE = "/readiness_check"


class JSONAnswer(Response):
    """JSON without NaN or Infinity (``allow_nan=False``): a value JSON cannot hold is a bug, answered 500."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return json.dumps(content, allow_nan=False).encode()


def encode(value, allow_nan: bool = False) -> str:
    """``json.dumps(value)``, with its large lists and objects encoded piece by piece: one ``json.dumps`` call holds
    the GIL throughout (120 ms for a 2.8 MB answer), pieces let the event loop and the light lane run between."""
    if isinstance(value, list) and len(value) > 16 and isinstance(value[0], (list, dict)):
        return "[" + ", ".join(encode(v, allow_nan) for v in value) + "]"
    if isinstance(value, dict) and any(isinstance(v, (list, dict)) for v in value.values()):
        items = (json.dumps(str(k)) + ": " + encode(v, allow_nan) for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return json.dumps(value, allow_nan=allow_nan)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONAnswer:
    return JSONAnswer({"error": message}, int(status), headers)


class _Lanes:
    def __init__(self, limits: HTTPLimits):
        self.executors = {
            name: ThreadPoolExecutor(
                workers, thread_name_prefix=f"serve-{name}", initializer=_name_lane, initargs=(name,)
            )
            for name, workers in (("light", limits.light_workers), ("heavy", limits.workers))
        }

    async def run(self, lane: str, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executors[lane], fn, *args)

    async def answer(self, lane: str, key: str | None, fn, *args, allow_nan: bool = False) -> Response:
        """A JSON 200 of ``fn(*args)`` (under ``key`` if one), computed and encoded in ``lane``'s threads: a large
        answer's encoding does not hold up the event loop."""

        def work() -> bytes:
            value = fn(*args)
            return encode(value if key is None else {key: value}, allow_nan).encode()

        return Response(await self.run(lane, work), media_type="application/json")

    def shutdown(self) -> None:
        for executor in self.executors.values():
            executor.shutdown(wait=False, cancel_futures=True)


def _name_lane(name: str) -> None:
    LANE.name = name


def _lane(cost: int, body_bytes: int = 0) -> str:
    return "light" if cost <= LIGHT_COST and body_bytes <= LIGHT_BODY_BYTES else "heavy"


def _predict_cost(request, recommender: Recommender) -> int:
    """Returned slots plus the ids sent, of a Vertex request value (invalid ones are cheap: they get a 400)."""
    if not isinstance(request, dict) or not isinstance(request.get("instances"), list):
        return 0
    parameters = request.get("parameters")
    k = parameters.get("k") if isinstance(parameters, dict) else None
    k = k if isinstance(k, int) and k > 0 else recommender.top_k
    cost = 0
    for instance in request["instances"]:
        cost += k
        if isinstance(instance, dict):
            for key in ("item_ids", "candidate_item_ids"):
                value = instance.get(key)
                cost += len(value) if isinstance(value, list) else 0
    return cost


def _tf_serving_cost(request, recommender: Recommender) -> int:
    """Leaves sent plus rows x k, of a TF Serving predict request value."""
    leaves = 0
    stack = [request]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        else:
            leaves += 1
    inputs = request.get("inputs") if isinstance(request, dict) else None
    k = inputs.get("k") if isinstance(inputs, dict) else None
    k = k if isinstance(k, int) and k > 0 else recommender.top_k
    return leaves * (1 + k)


def _query_cost(query: str) -> int:
    """numRecs plus the candidate ids of a GET route's query."""
    try:
        params = parse_qs(query, max_num_fields=16)
    except ValueError:
        return 0
    recs = params.get("numRecs", ["5"])[0]
    cost = int(recs) if recs.isascii() and recs.isdigit() and len(recs) < 10 else 0
    return cost + params.get("candidateItemIds", [""])[0].count(",")


def create_app(
    models,
    limits: WorkLimits,
    http: HTTPLimits,
    health_route: str = "/health",
    predict_route: str = "/predict",
    model_name: str = "wals",
    access_log: bool = True,
) -> Starlette:
    """The routes over ``models.current`` (read once per request, so that a swap never splits one).

    Args:
        models: anything with a ``current`` Recommender.
        limits: the per-request ``WorkLimits``.
        http: the ``HTTPLimits`` (body size and time, the lanes' threads).
        health_route, predict_route: Vertex's routes (they win over a TF Serving route of the same path).
        model_name: the ``<name>`` of TF Serving's routes.
        access_log: one ``serving.access`` log line per request (``serving.observe``).
    """
    lanes = _Lanes(http)
    metrics = Metrics(models)

    async def body_of(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > http.max_body_bytes:
            raise BadRequest(
                f"The request body should be at most {http.max_body_bytes} bytes (--max-body-bytes). "
                f"Received Content-Length: {length}",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )

        async def read() -> bytes:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > http.max_body_bytes:
                    raise BadRequest(
                        f"The request body should be at most {http.max_body_bytes} bytes (--max-body-bytes).",
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    )
                chunks.append(chunk)
            return b"".join(chunks)

        try:
            return await asyncio.wait_for(read(), http.body_timeout_s)
        except TimeoutError:
            raise BadRequest(
                f"The request body did not arrive within {http.body_timeout_s:g} s (--body-timeout).",
                HTTPStatus.REQUEST_TIMEOUT,
            ) from None

    async def parsed(request: Request, recommender: Recommender, cost_of) -> tuple[object, str]:
        """(the body, parsed when it is small enough to parse on the loop, or raw bytes; its lane)."""
        body = await body_of(request)
        if len(body) > LIGHT_BODY_BYTES:
            return body, "heavy"
        value = load_json(body)
        return value, _lane(cost_of(value, recommender))

    def answered(endpoint):
        async def wrapper(request: Request) -> Response:
            try:
                return await endpoint(request, models.current)
            except BadRequest as err:
                if err.plain:
                    return PlainTextResponse(str(err), int(err.status))
                closing = err.status in (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, HTTPStatus.REQUEST_TIMEOUT)
                return error(err.status, str(err), {"Connection": "close"} if closing else None)
            except HTTPException:
                raise  # http_error answers it
            except ClientDisconnect:
                return Response(status_code=499)  # nobody reads it; uvicorn drops it
            except Exception:
                logger.exception("error while answering %s %s", request.method, request.url.path)
                return error(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error; the server log has the details.")

        return wrapper

    async def predict(request: Request, recommender: Recommender) -> Response:
        value, lane = await parsed(request, recommender, _predict_cost)
        return await lanes.answer(lane, "predictions", requests.parse_predict, value, recommender, limits)

    async def health(request: Request, recommender: Recommender) -> Response:
        return JSONAnswer({"status": "ok", "model_version": recommender.version})

    async def tf1(request: Request, recommender: Recommender) -> Response:
        query = request.url.query
        lane = _lane(_query_cost(query))
        return await lanes.answer(lane, "articles", requests.parse_tf1, query, recommender, limits)

    def similar(route: str):
        async def endpoint(request: Request, recommender: Recommender) -> Response:
            query = request.url.query
            lane = _lane(_query_cost(query))
            key = requests.SIMILAR_ROUTES[route][2]
            return await lanes.answer(lane, key, requests.parse_similar, route, query, recommender, limits)

        return endpoint

    async def tf_serving_route(request: Request, recommender: Recommender) -> Response:
        match = tf_serving.ROUTE.fullmatch(request.url.path)
        if not match:
            raise BadRequest(f"No route {brief(request.url.path)}.", HTTPStatus.NOT_FOUND)
        name, version, tail = match["name"], match["version"], match["tail"]
        request.scope["wals2.route"] = {":predict": "tf_serving_predict", "/metadata": "tf_serving_metadata"}.get(
            tail, "tf_serving_status"
        )
        if name != model_name or version not in (None, recommender.version):
            raise tf_serving.not_found(name, version)
        if tail == ":predict":
            _allow(request.method, "POST")
            value, lane = await parsed(request, recommender, _tf_serving_cost)
            # TF Serving's convention: an empty slot's score is written -Infinity.
            return await lanes.answer(lane, None, tf_serving.predict, value, recommender, limits, allow_nan=True)
        _allow(request.method, "GET", "HEAD")
        if tail == "/metadata":
            return JSONAnswer(tf_serving.metadata(recommender, name))
        return JSONAnswer(tf_serving.status(recommender))

    async def metrics_route(request: Request) -> Response:
        body, kind = metrics.exposition()
        return Response(body, media_type=kind)

    routes = [
        Route("/metrics", metrics_route, methods=["GET", "HEAD"], name="metrics"),
        Route(predict_route, answered(predict), methods=["POST"], name="predict"),
        Route(health_route, answered(health), methods=["GET", "HEAD"], name="health"),
        Route(TF1_READINESS_ROUTE, answered(health), methods=["GET", "HEAD"], name="readiness"),
        Route(requests.TF1_ROUTE, answered(tf1), methods=["GET", "HEAD"], name="tf1"),
        *(
            Route(path, answered(similar(path)), methods=["GET", "HEAD"], name=path.strip("/"))
            for path in requests.SIMILAR_ROUTES
        ),
        Route("/v1/models/{rest:path}", answered(tf_serving_route), methods=["GET", "HEAD", "POST"], name="tf_serving"),
    ]

    async def http_error(request: Request, err: HTTPException) -> Response:
        headers = dict(err.headers or {})
        if err.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            allowed = headers.get("Allow", "")
            message = f"Method {request.method} is not allowed here; use {allowed.replace(', ', ' or ')}."
        elif err.status_code == HTTPStatus.NOT_FOUND:
            message = f"No route {brief(request.url.path)}."
        else:
            message = err.detail
        return error(err.status_code, message, headers)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.router.redirect_slashes = False  # "/health/" is an unknown route (a JSON 404), not a redirect
    app.state.lanes = lanes
    app.state.metrics = metrics
    app.add_middleware(_HTTPVersion)
    app.add_middleware(Observe, metrics=metrics, access_log=access_log)  # the outermost: it sees every answer
    return app


class _HTTPVersion:
    """505 for an HTTP version other than 1.x (h11 parses ``HTTP/2.0`` in a request line and would answer it)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("http_version") not in ("1.0", "1.1"):
            message = f"HTTP version {scope.get('http_version')} is not supported; send HTTP/1.1 or HTTP/1.0."
            await error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, message, {"Connection": "close"})(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HTTPException(HTTPStatus.METHOD_NOT_ALLOWED, headers={"Allow": ", ".join(allowed)})
