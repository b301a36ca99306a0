"""``python -m trainer.serve --model-dir DIR``: an HTTP server for a wals2 serving SavedModel.

Routes:

- ``POST $AIP_PREDICT_ROUTE`` (default ``/predict``), Vertex AI's custom-container contract:
  ``{"instances": [{"user_id": "42"}, ...], "parameters": {"k": 20}}`` (``parameters`` optional; default k is
  the export's ``top_k``) -> ``{"predictions": [{"item_ids": [...], "scores": [...], "known_user": true}]}``.
  An instance ``{"item_ids": [...], "ratings": [...]}`` is a new user, folded in
  (``{"item_ids", "scores", "num_known_items"}``). Unknown users get the most popular items, ``known_user`` false.
- ``GET $AIP_HEALTH_ROUTE`` (default ``/health``) and ``GET /readiness_check``: 200 once the model is loaded.
- ``GET /recommendation?userId=<id>&numRecs=<n>``, TF1's app: ``{"articles": [...]}`` (numRecs default 5), and
  its plain-text 400s ``No User Id provided.``, ``User id and number of recs arguments must be integers.`` and
  ``User Id not found : <userId>`` (also for a user with no training ratings).

Bad requests get a 4xx with a JSON ``{"error": ...}`` (plain text on the TF1 route), never a 5xx. The server is
the standard library's ``ThreadingHTTPServer`` (one thread per connection, no extra dependency): the model only
reads its variables and tables, so concurrent calls into the loaded SavedModel need no lock (TF's runtime is
thread safe). It loads the SavedModel with TensorFlow alone.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from http import HTTPStatus  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

logger = logging.getLogger("trainer.serve")

MAX_INSTANCES = 1000  # per request; more gives 413
MAX_BODY_BYTES = 4 << 20  # request body; more gives 413
MAX_RATED_ITEMS = 10000  # per fold-in instance
SOCKET_TIMEOUT_S = 30  # an idle keep-alive connection or a stalled body is dropped after this
TF1_DEFAULT_RECS = 5
TF1_ROUTE = "/recommendation"
TF1_READINESS_ROUTE = "/readiness_check"


class BadRequest(Exception):
    """A client error: HTTP ``status`` with ``message``."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


class Server(ThreadingHTTPServer):
    """One thread per connection; a listen backlog that holds a burst of new connections."""

    daemon_threads = True
    request_queue_size = 128


class Recommender:
    """The loaded SavedModel's signatures, called with validated numpy inputs."""

    def __init__(self, model_dir: str):
        loaded = tf.saved_model.load(model_dir)
        self._loaded = loaded  # keeps the restored variables and tables alive
        self.default = loaded.signatures["serving_default"]
        self.recommend = loaded.signatures["recommend"]
        self.fold_in = loaded.signatures["fold_in_recommend"]
        self.num_items = int(loaded.item_vocabulary.shape[0])
        self.top_k = int(self.default.structured_outputs["scores"].shape[1])
        # Warm up every signature (the first call of each is slow) before the health route says ready.
        self.users([""], None)
        self.users([""], 1)
        self.new_users([([""], [0.0])], None)

    def users(self, user_ids: list[str], k: int | None) -> list[dict]:
        """Top-k of known or unknown raw user ids (k None: the export's top_k)."""
        ids = tf.constant(user_ids, tf.string)
        if k is None:
            out = self.default(user_id=ids)
        else:
            out = self.recommend(user_id=ids, k=tf.constant(k, tf.int32))
        known = out["known_user"].numpy()
        return [
            dict(_trim(items, scores), known_user=bool(flag))
            for items, scores, flag in zip(out["item_ids"].numpy(), out["scores"].numpy(), known)
        ]

    def new_users(self, rated: list[tuple[list[str], list[float]]], k: int | None) -> list[dict]:
        """Fold-in top-k (the export's top_k, cut to k) of new users given (item ids, ratings)."""
        width = max(len(items) for items, _ in rated)
        ids = np.full((len(rated), width), "", dtype=object)
        values = np.zeros((len(rated), width), np.float32)
        for b, (items, ratings) in enumerate(rated):
            ids[b, : len(items)] = items
            values[b, : len(items)] = ratings
        out = self.fold_in(item_ids=tf.constant(ids, tf.string), ratings=tf.constant(values))
        rows = zip(out["item_ids"].numpy(), out["scores"].numpy(), out["num_known_items"].numpy())
        return [dict(_trim(items[:k], scores[:k]), num_known_items=int(n)) for items, scores, n in rows]


def _trim(items: np.ndarray, scores: np.ndarray) -> dict:
    """JSON lists, without the empty slots ("" / -inf) of a user with fewer than k unseen items."""
    keep = items != b""
    return {"item_ids": [i.decode() for i in items[keep]], "scores": [float(s) for s in scores[keep]]}


def parse_predict(body: bytes, recommender: Recommender) -> list[dict]:
    """Validates a Vertex request body and returns its predictions (one per instance, in order)."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(f"The request body should be JSON. Received invalid JSON: {err}") from None
    if not isinstance(request, dict) or "instances" not in request:
        raise BadRequest('The request body should be a JSON object with "instances". Received: ' + _brief(request))
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest(f'"instances" should be a non-empty list. Received: instances={_brief(instances)}')
    if len(instances) > MAX_INSTANCES:
        raise BadRequest(
            f'"instances" should hold at most {MAX_INSTANCES} instances. Received: {len(instances)}',
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    k = _parameter_k(request.get("parameters"), recommender)
    users: list[tuple[int, str]] = []
    rated: list[tuple[int, tuple[list[str], list[float]]]] = []
    for n, instance in enumerate(instances):
        if isinstance(instance, dict) and set(instance) == {"user_id"}:
            users.append((n, _raw_id(instance["user_id"], f"instances[{n}].user_id")))
        elif isinstance(instance, dict) and set(instance) == {"item_ids", "ratings"}:
            rated.append((n, _rated(instance, n)))
        else:
            raise BadRequest(
                f'instances[{n}] should be {{"user_id": id}} or {{"item_ids": [ids], "ratings": [numbers]}}. '
                f"Received: instances[{n}]={_brief(instance)}"
            )
    predictions: list[dict] = [{}] * len(instances)
    if users:
        for (n, _), prediction in zip(users, recommender.users([u for _, u in users], k)):
            predictions[n] = prediction
    if rated:
        if k is not None and k > recommender.top_k:
            raise BadRequest(
                f'"parameters.k" should be at most {recommender.top_k} for fold-in instances. Received: k={k}'
            )
        for (n, _), prediction in zip(rated, recommender.new_users([r for _, r in rated], k)):
            predictions[n] = prediction
    return predictions


def _parameter_k(parameters, recommender: Recommender) -> int | None:
    if parameters is None:
        return None
    if not isinstance(parameters, dict) or set(parameters) - {"k"}:
        raise BadRequest(f'"parameters" should be an object with at most "k". Received: {_brief(parameters)}')
    if "k" not in parameters:
        return None
    k = parameters["k"]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= recommender.num_items:
        raise BadRequest(f'"parameters.k" should be an integer in [1, {recommender.num_items}]. Received: k={k!r}')
    return k


def _raw_id(value, where: str) -> str:
    """A raw id: a string, or an integer (MovieLens ids), as its decimal string."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRequest(f"`{where}` should be a string or an integer id. Received: {_brief(value)}")


def _rated(instance: dict, n: int) -> tuple[list[str], list[float]]:
    items, ratings = instance["item_ids"], instance["ratings"]
    if not isinstance(items, list) or not isinstance(ratings, list) or len(items) != len(ratings):
        raise BadRequest(
            f"`instances[{n}].item_ids` and `ratings` should be lists of the same length. "
            f"Received: item_ids={_brief(items)}, ratings={_brief(ratings)}"
        )
    if not 1 <= len(items) <= MAX_RATED_ITEMS:
        raise BadRequest(f"`instances[{n}].item_ids` should hold 1 to {MAX_RATED_ITEMS} items. Received: {len(items)}")
    ids = [_raw_id(item, f"instances[{n}].item_ids") for item in items]
    for value in ratings:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadRequest(f"`instances[{n}].ratings` should be finite numbers. Received: {_brief(value)}")
    return ids, [float(r) for r in ratings]


def parse_tf1(query: str, recommender: Recommender) -> list[str]:
    """TF1's ``/recommendation`` lookup; raises ``BadRequest`` with TF1's messages."""
    params = parse_qs(query, keep_blank_values=True)
    user = params.get("userId", [None])[0]
    if user is None:
        raise BadRequest("No User Id provided.")
    recs = params.get("numRecs", [str(TF1_DEFAULT_RECS)])[0]
    try:
        user_number, num_recs = int(user), int(recs)
    except ValueError:
        raise BadRequest("User id and number of recs arguments must be integers.") from None
    if not 1 <= num_recs <= recommender.num_items:
        raise BadRequest(f"`numRecs` should be an integer in [1, {recommender.num_items}]. Received: numRecs={recs}")
    (prediction,) = recommender.users([str(user_number)], num_recs)
    if not prediction["known_user"]:
        raise BadRequest(f"User Id not found : {user}")
    return prediction["item_ids"]


def _brief(value, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def make_handler(recommender: Recommender, health_route: str, predict_route: str):
    """A request handler class bound to ``recommender`` and the Vertex routes."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every response sets Content-Length
        server_version = "wals2-serve"
        timeout = SOCKET_TIMEOUT_S
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall between them

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path in (health_route, TF1_READINESS_ROUTE):
                self._send(HTTPStatus.OK, b"" if url.path == TF1_READINESS_ROUTE else b'{"status": "ok"}')
            elif url.path == TF1_ROUTE:
                try:
                    articles = parse_tf1(url.query, recommender)
                except BadRequest as err:
                    self._send(err.status, str(err).encode(), "text/plain; charset=utf-8")
                else:
                    self._json(HTTPStatus.OK, {"articles": articles})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"No route {url.path!r} for GET."})

        def do_POST(self):
            if urlsplit(self.path).path != predict_route:
                self.close_connection = True  # the body is not read
                self._json(HTTPStatus.NOT_FOUND, {"error": f"No route {self.path!r} for POST."})
                return
            try:
                body = self._body()
                self._json(HTTPStatus.OK, {"predictions": parse_predict(body, recommender)})
            except BadRequest as err:
                self._json(err.status, {"error": str(err)})

        def _method_not_allowed(self):
            self.close_connection = True
            self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"Method {self.command} is not allowed."})

        do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _method_not_allowed

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None:
                self.close_connection = True
                raise BadRequest("The request should have a Content-Length header.", HTTPStatus.LENGTH_REQUIRED)
            if not length.isdigit():
                self.close_connection = True
                raise BadRequest(f"Content-Length should be a non-negative integer. Received: {length!r}")
            if int(length) > MAX_BODY_BYTES:
                self.close_connection = True
                raise BadRequest(
                    f"The request body should be at most {MAX_BODY_BYTES} bytes. Received: {length}",
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                )
            try:
                return self.rfile.read(int(length))
            except TimeoutError:
                self.close_connection = True
                raise BadRequest(
                    f"The request body did not arrive within {SOCKET_TIMEOUT_S} s.", HTTPStatus.REQUEST_TIMEOUT
                ) from None

        def _json(self, status: HTTPStatus, value) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's signature)
            logger.debug("%s %s", self.address_string(), format % args)

    return Handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir",
        default=os.environ.get("AIP_STORAGE_URI"),
        help="the SavedModel directory (default $AIP_STORAGE_URI); local or gs://",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("AIP_HTTP_PORT", "8080")), help="0 picks a free port"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    if not args.model_dir:
        logger.error("`--model-dir` should name a SavedModel directory (or set AIP_STORAGE_URI).")
        return 2
    try:
        recommender = Recommender(args.model_dir)
    except (OSError, KeyError, AttributeError, tf.errors.OpError) as err:
        logger.error("cannot load a wals2 serving SavedModel from %s: %s", args.model_dir, err)
        return 1
    health = os.environ.get("AIP_HEALTH_ROUTE", "/health")
    predict = os.environ.get("AIP_PREDICT_ROUTE", "/predict")
    server = Server((args.host, args.port), make_handler(recommender, health, predict))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, port = server.server_address[:2]
    logger.info(
        "serving %s (%d items, top %d) on http://%s:%d  predict %s  health %s  TF1 %s",
        args.model_dir,
        recommender.num_items,
        recommender.top_k,
        host,
        port,
        predict,
        health,
        TF1_ROUTE,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
