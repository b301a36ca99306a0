"""``python -m trainer.serve --model-dir DIR``: an HTTP server for a wals2 serving SavedModel.

Routes:

- ``POST $AIP_PREDICT_ROUTE`` (default ``/predict``), Vertex AI's custom-container contract:
  ``{"instances": [{"user_id": "42"}, ...], "parameters": {"k": 20}}`` (``parameters`` optional; default k is
  the export's ``top_k``) -> ``{"predictions": [{"item_ids": [...], "scores": [...], "known_user": true}]}``.
  An instance ``{"item_ids": [...], "ratings": [...]}`` is a new user, folded in
  (``{"item_ids", "scores", "num_known_items"}``). Unknown users get the most popular items, ``known_user`` false.
  ``{"user_id": "42", "candidate_item_ids": [...]}`` ranks only those items for the user (``recommend_from``);
  ``{"similar_to_item": "50"}`` -> ``{"item_ids", "scores", "known_item"}`` and ``{"similar_to_user": "42"}`` ->
  ``{"user_ids", "scores", "known_user"}`` are the most similar items / users (``similar_items`` /
  ``similar_users``). One request may mix these kinds; ``parameters.k`` applies to all of them.
- TensorFlow Serving's REST API (``trainer.tf_serving``): ``POST /v1/models/<name>[/versions/<v>]:predict``,
  ``GET /v1/models/<name>[/versions/<v>]`` and ``.../metadata``.
- ``GET $AIP_HEALTH_ROUTE`` (default ``/health``) and ``GET /readiness_check``: 200 with
  ``{"status": "ok", "model_version": ...}`` once the model is loaded.
- ``GET /recommendation?userId=<id>&numRecs=<n>``, TF1's app: ``{"articles": [...]}`` (numRecs default 5), and
  its plain-text 400s ``No User Id provided.``, ``User id and number of recs arguments must be integers.`` and
  ``User Id not found : <userId>`` (also for a user with no training ratings); a numRecs out of range is a JSON 400.
  ``&candidateItemIds=2,4,50`` (not TF1's) ranks only those items.
- ``GET /similar_items?itemId=<id>&numRecs=<n>`` -> ``{"item_ids": [...]}`` and ``GET /similar_users?userId=<id>``
  -> ``{"user_ids": [...]}`` (numRecs default 5, the query itself first); an unknown id is a JSON 404.

Every request gets an HTTP status: bad requests a 4xx with a JSON ``{"error": ...}`` (TF1's three plain-text
messages aside), work beyond the limits a 413 naming the limit and its flag. The transport is
``trainer.http_server``: an asyncio loop for the connections and a fixed pool of worker threads that call the
model, first come first served. The model only reads its variables and tables, so concurrent calls need no lock.
It loads the SavedModel with TensorFlow alone.

``--model-dir`` is either a SavedModel or a TF Serving base directory of numbered versions
(``<dir>/<version>/saved_model.pb``, ``trainer.model_versions``): then the highest version is served and a new one
is loaded, warmed up and swapped in while serving.
"""

from __future__ import annotations

import os

from trainer import environment  # noqa: E402  (the standard library only)

environment.set_defaults()  # before TensorFlow's import

import argparse  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from http import HTTPStatus  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

from trainer import (  # noqa: E402
    logs,  # noqa: E402
    model_versions,
    tf_serving,
)
from trainer.http_server import HTTPServer, Limits, Request, Response, error_response, json_response  # noqa: E402
from trainer.serve_model import BadRequest, Recommender, WorkLimits, brief, load_json, rating, raw_id  # noqa: E402

logger = logging.getLogger("trainer.serve")

TF1_DEFAULT_RECS = 5
TF1_ROUTE = "/recommendation"
TF1_READINESS_ROUTE = "/readiness_check"
# route -> (query parameter, signature, id output, flag output)
SIMILAR_ROUTES = {
    "/similar_items": ("itemId", "similar_items", "item_ids", "known_item"),
    "/similar_users": ("userId", "similar_users", "user_ids", "known_user"),
}
_TF1_INTEGER = re.compile(r"-?[0-9]{1,30}")  # ASCII digits only (int() would also take "1_0", " 1", Arabic digits)


# Vertex instance keys -> what they ask for (see the module docstring).
_INSTANCE_KINDS = {
    frozenset({"user_id"}): "user",
    frozenset({"item_ids", "ratings"}): "fold_in",
    frozenset({"user_id", "candidate_item_ids"}): "candidates",
    frozenset({"similar_to_item"}): "similar_items",
    frozenset({"similar_to_user"}): "similar_users",
}
_INSTANCE_FORMS = (
    '{"user_id": id}, {"user_id": id, "candidate_item_ids": [ids]}, {"item_ids": [ids], "ratings": [numbers]}, '
    '{"similar_to_item": id} or {"similar_to_user": id}'
)


def parse_predict(body: bytes, recommender: Recommender, limits: WorkLimits) -> list[dict]:
    """Validates a Vertex request body and returns its predictions (one per instance, in order)."""
    request = load_json(body)
    if not isinstance(request, dict) or "instances" not in request:
        raise BadRequest('The request body should be a JSON object with "instances". Received: ' + brief(request))
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest(f'"instances" should be a non-empty list. Received: instances={brief(instances)}')
    limits.check_instances(len(instances))
    k = _parameter_k(request.get("parameters"), recommender)
    groups: dict[str, list[tuple[int, object]]] = {kind: [] for kind in _INSTANCE_KINDS.values()}
    for n, instance in enumerate(instances):
        kind = _INSTANCE_KINDS.get(frozenset(instance)) if isinstance(instance, dict) else None
        if kind is None:
            raise BadRequest(f"instances[{n}] should be {_INSTANCE_FORMS}. Received: instances[{n}]={brief(instance)}")
        groups[kind].append((n, _instance(kind, instance, n)))
    limits.check_results(len(instances), k or recommender.top_k)
    if groups["fold_in"]:
        if k is not None and k > recommender.top_k:
            raise BadRequest(
                f'"parameters.k" should be at most {recommender.top_k} for fold-in instances. Received: k={k}'
            )
        limits.check_fold_in(len(groups["fold_in"]), max(len(items) for _, (items, _) in groups["fold_in"]))
    if groups["candidates"]:
        limits.check_candidates(len(groups["candidates"]), max(len(c) for _, (_, c) in groups["candidates"]))
    if groups["similar_users"] and k is not None and k > recommender.num_users:
        raise BadRequest(
            f'"parameters.k" should be at most {recommender.num_users} (the users) for similar_to_user instances. '
            f"Received: k={k}"
        )
    answers = {
        "user": lambda values: recommender.users(values, k),
        "fold_in": lambda values: recommender.new_users(
            values, k, [f"instances[{n}].ratings" for n, _ in groups["fold_in"]]
        ),
        "candidates": lambda values: recommender.users_from(values, k or recommender.top_k),
        "similar_items": lambda values: recommender.similar("similar_items", values, k or recommender.top_k),
        "similar_users": lambda values: recommender.similar(
            "similar_users", values, k or min(recommender.top_k, recommender.num_users)
        ),
    }
    predictions: list[dict] = [{}] * len(instances)
    for kind, entries in groups.items():
        if entries:
            for (n, _), prediction in zip(entries, answers[kind]([value for _, value in entries])):
                predictions[n] = prediction
    return predictions


def _instance(kind: str, instance: dict, n: int):
    """The validated value of instance ``n`` of ``kind``: a raw id, (items, ratings) or (user, candidates)."""
    if kind == "user":
        return raw_id(instance["user_id"], f"instances[{n}].user_id")
    if kind == "fold_in":
        return _rated(instance, n)
    if kind == "candidates":
        candidates = instance["candidate_item_ids"]
        if not isinstance(candidates, list) or not candidates:
            raise BadRequest(
                f"`instances[{n}].candidate_item_ids` should be a non-empty list of item ids. "
                f"Received: {brief(candidates)}"
            )
        user = raw_id(instance["user_id"], f"instances[{n}].user_id")
        return user, [raw_id(item, f"instances[{n}].candidate_item_ids") for item in candidates]
    key = "similar_to_item" if kind == "similar_items" else "similar_to_user"
    return raw_id(instance[key], f"instances[{n}].{key}")


def _parameter_k(parameters, recommender: Recommender) -> int | None:
    if parameters is None:
        return None
    if not isinstance(parameters, dict) or set(parameters) - {"k"}:
        raise BadRequest(f'"parameters" should be an object with at most "k". Received: {brief(parameters)}')
    if "k" not in parameters:
        return None
    k = parameters["k"]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= recommender.num_items:
        raise BadRequest(f'"parameters.k" should be an integer in [1, {recommender.num_items}]. Received: k={brief(k)}')
    return k


def _rated(instance: dict, n: int) -> tuple[list[str], list[float]]:
    items, ratings = instance["item_ids"], instance["ratings"]
    if not isinstance(items, list) or not isinstance(ratings, list) or len(items) != len(ratings):
        raise BadRequest(
            f"`instances[{n}].item_ids` and `ratings` should be lists of the same length. "
            f"Received: item_ids={brief(items)}, ratings={brief(ratings)}"
        )
    if not items:
        raise BadRequest(f"`instances[{n}].item_ids` should hold at least 1 item. Received: []")
    ids = [raw_id(item, f"instances[{n}].item_ids") for item in items]
    return ids, [rating(value, f"instances[{n}].ratings") for value in ratings]


def parse_tf1(query: str, recommender: Recommender, limits: WorkLimits) -> list[str]:
    """TF1's ``/recommendation`` lookup; raises ``BadRequest`` with TF1's plain-text messages.

    ``candidateItemIds`` (comma-separated raw item ids; not TF1's) ranks only those items (``recommend_from``)."""
    params = _query(query)
    user = params.get("userId", [None])[0]
    if user is None:
        raise BadRequest("No User Id provided.", plain=True)
    recs = params.get("numRecs", [str(TF1_DEFAULT_RECS)])[0]
    if not (_TF1_INTEGER.fullmatch(user) and _TF1_INTEGER.fullmatch(recs)):
        raise BadRequest("User id and number of recs arguments must be integers.", plain=True)
    num_recs = _num_recs(recs, min(recommender.num_items, limits.max_results))
    if "candidateItemIds" in params:
        candidates = params["candidateItemIds"][0].split(",")
        if not all(candidates):
            raise BadRequest(
                "`candidateItemIds` should be item ids separated by commas. "
                f"Received: candidateItemIds={brief(params['candidateItemIds'][0])}"
            )
        limits.check_candidates(1, len(candidates))
        (prediction,) = recommender.users_from([(str(int(user)), candidates)], num_recs)
    else:
        (prediction,) = recommender.users([str(int(user))], num_recs)
    if not prediction["known_user"]:
        raise BadRequest(f"User Id not found : {user}", plain=True)
    return prediction["item_ids"]


def parse_similar(route: str, query: str, recommender: Recommender, limits: WorkLimits) -> list[str]:
    """``GET /similar_items?itemId=<id>&numRecs=<n>`` and ``/similar_users?userId=...``: the similar ids.

    Raises ``BadRequest``: 400 for a missing id or a bad numRecs, 404 for an id that is unknown to the model."""
    key, signature, ids, flag = SIMILAR_ROUTES[route]
    params = _query(query)
    value = params.get(key, [""])[0]
    if not value:
        raise BadRequest(f"`{key}` should name an id: {route}?{key}=<id>&numRecs=<n>. Received: {brief(query)}")
    size = recommender.num_items if signature == "similar_items" else recommender.num_users
    num_recs = _num_recs(params.get("numRecs", [str(TF1_DEFAULT_RECS)])[0], min(size, limits.max_results))
    (answer,) = recommender.similar(signature, [value], num_recs)
    if not answer[flag]:
        raise BadRequest(
            f"`{key}` {brief(value)} is not in the model (or has no training ratings).", HTTPStatus.NOT_FOUND
        )
    return answer[ids]


def _query(query: str) -> dict[str, list[str]]:
    try:
        return parse_qs(query, keep_blank_values=True, errors="strict", max_num_fields=16)
    except (UnicodeDecodeError, ValueError) as err:
        raise BadRequest(f"The query string should be UTF-8 with at most 16 fields: {err}") from None


def _num_recs(text: str, most: int) -> int:
    """``numRecs``: ASCII digits in [1, most]; a JSON 400 otherwise."""
    if not _TF1_INTEGER.fullmatch(text) or not 1 <= int(text) <= most:
        raise BadRequest(f"`numRecs` should be an integer in [1, {most}]. Received: numRecs={text}")
    return int(text)


class App:
    """The routes (see the module docstring) over the model that ``models.current`` serves now.

    Args:
        models: anything with a ``current`` Recommender (read once per request, so a swap never splits one).
        limits: the per-request ``WorkLimits``.
        health_route, predict_route: Vertex's routes (they win over a TF Serving route of the same path).
        model_name: the name of TF Serving's routes.
    """

    def __init__(self, models, limits: WorkLimits, health_route: str, predict_route: str, model_name: str):
        self.models = models
        self.limits = limits
        self.health_route = health_route
        self.predict_route = predict_route
        self.model_name = model_name

    def __call__(self, request: Request) -> Response:
        recommender = self.models.current
        try:
            return self._route(request, recommender)
        except _MethodNotAllowed as err:
            return error_response(err.status, str(err), {"Allow": ", ".join(err.allowed)})
        except BadRequest as err:
            if err.plain:
                return Response(int(err.status), str(err).encode(), "text/plain; charset=utf-8")
            return error_response(err.status, str(err))

    def _route(self, request: Request, recommender: Recommender) -> Response:
        path, method = request.path, request.method
        if path == self.predict_route:
            self._allow(method, "POST")
            return json_response(HTTPStatus.OK, {"predictions": parse_predict(request.body, recommender, self.limits)})
        if path in (self.health_route, TF1_READINESS_ROUTE):
            self._allow(method, "GET", "HEAD")
            return json_response(HTTPStatus.OK, {"status": "ok", "model_version": recommender.version})
        if path == TF1_ROUTE:
            self._allow(method, "GET", "HEAD")
            return json_response(HTTPStatus.OK, {"articles": parse_tf1(request.query, recommender, self.limits)})
        if path in SIMILAR_ROUTES:
            self._allow(method, "GET", "HEAD")
            found = parse_similar(path, request.query, recommender, self.limits)
            return json_response(HTTPStatus.OK, {SIMILAR_ROUTES[path][2]: found})
        match = tf_serving.ROUTE.fullmatch(path)
        if match:
            name, version, tail = match["name"], match["version"], match["tail"]
            if name != self.model_name or version not in (None, recommender.version):
                raise tf_serving.not_found(name, version)
            if tail == ":predict":
                self._allow(method, "POST")
                return json_response(HTTPStatus.OK, tf_serving.predict(request.body, recommender, self.limits))
            self._allow(method, "GET", "HEAD")
            if tail == "/metadata":
                return json_response(HTTPStatus.OK, tf_serving.metadata(recommender, name))
            return json_response(HTTPStatus.OK, tf_serving.status(recommender))
        raise BadRequest(f"No route {brief(path)}.", HTTPStatus.NOT_FOUND)

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise _MethodNotAllowed(method, allowed)


class _MethodNotAllowed(BadRequest):
    def __init__(self, method: str, allowed: tuple[str, ...]):
        super().__init__(
            f"Method {method} is not allowed here; use {' or '.join(allowed)}.", HTTPStatus.METHOD_NOT_ALLOWED
        )
        self.allowed = allowed


class _Fixed:
    """One model, served as it was loaded."""

    def __init__(self, recommender: Recommender):
        self.current = recommender


def build_parser() -> argparse.ArgumentParser:
    defaults_work, defaults_http = WorkLimits(), Limits()
    parser = argparse.ArgumentParser(prog="python -m trainer.serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir",
        default=os.environ.get("AIP_STORAGE_URI"),
        help="a SavedModel directory, or a base directory of numbered versions (default $AIP_STORAGE_URI); "
        "local or gs://",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("AIP_HTTP_PORT", "8080")),
        help="default $AIP_HTTP_PORT or 8080; 0 picks a free port",
    )
    parser.add_argument(
        "--model-name",
        default=os.environ.get("MODEL_NAME", "wals"),
        help="the <name> of the TF Serving routes /v1/models/<name> (default $MODEL_NAME or wals)",
    )
    group = parser.add_argument_group("limits (more gives 413, 431, 408 or 503)")
    positive = _positive_int
    group.add_argument(
        "--max-instances",
        type=positive,
        default=defaults_work.max_instances,
        help="instances per request (default %(default)s)",
    )
    group.add_argument(
        "--max-results",
        type=positive,
        default=defaults_work.max_results,
        help="instances x k per request (default %(default)s)",
    )
    group.add_argument(
        "--max-fold-in-items",
        type=positive,
        default=defaults_work.max_fold_in_items,
        help="fold-in instances x their longest item list, per request (default %(default)s)",
    )
    group.add_argument(
        "--max-candidates",
        type=positive,
        default=defaults_work.max_candidates,
        help="candidate instances x their longest candidate list, per request (default %(default)s)",
    )
    group.add_argument(
        "--max-body-bytes",
        type=positive,
        default=defaults_http.max_body_bytes,
        help="request body bytes (default %(default)s)",
    )
    group.add_argument(
        "--max-connections",
        type=positive,
        default=defaults_http.max_connections,
        help="open connections (default %(default)s)",
    )
    group.add_argument(
        "--workers",
        type=positive,
        default=defaults_http.workers,
        help="threads that call the model (default %(default)s)",
    )
    group.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=defaults_http.header_timeout_s,
        help="seconds for a request head, from its first byte (default %(default)s)",
    )
    group.add_argument(
        "--body-timeout",
        type=_positive_float,
        default=defaults_http.body_timeout_s,
        help="seconds for a request body (default %(default)s)",
    )
    group.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=defaults_http.idle_timeout_s,
        help="seconds a kept-alive connection may wait for its next request (default %(default)s)",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=5.0,
        help="seconds between looks for a new version when --model-dir holds numbered versions (default 5)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"should be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a positive number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"should be a positive number of seconds, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.verbose)
    if not args.model_dir:
        logger.error("`--model-dir` should name a SavedModel directory (or set AIP_STORAGE_URI).")
        return 2
    import tensorflow as tf

    try:
        if model_versions.is_versioned(args.model_dir):
            models = model_versions.VersionedModels(args.model_dir)
            models.watch(args.poll_interval)
        else:
            models = _Fixed(Recommender(args.model_dir))
    except (OSError, KeyError, ValueError, AttributeError, tf.errors.OpError) as err:
        logger.error("cannot load a wals2 serving SavedModel from %s: %s", args.model_dir, err)
        return 1
    work = WorkLimits(args.max_instances, args.max_results, args.max_fold_in_items, args.max_candidates)
    limits = Limits(
        max_connections=args.max_connections,
        workers=args.workers,
        max_body_bytes=args.max_body_bytes,
        idle_timeout_s=args.idle_timeout,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
    )
    health = os.environ.get("AIP_HEALTH_ROUTE", "/health")
    predict = os.environ.get("AIP_PREDICT_ROUTE", "/predict")
    app = App(models, work, health, predict, args.model_name)
    server = HTTPServer(app, limits)

    def ready(host: str, port: int) -> None:
        recommender = models.current
        logger.info(
            "serving %s version %s (%d items, top %d) on http://%s:%d  predict %s  health %s  TF1 %s  "
            "TF Serving /v1/models/%s",
            args.model_dir,
            recommender.version,
            recommender.num_items,
            recommender.top_k,
            host,
            port,
            predict,
            health,
            TF1_ROUTE,
            args.model_name,
        )

    server.run(args.host, args.port, ready)
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
