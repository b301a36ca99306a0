"""``python -m trainer.serve --model-dir DIR`` (``serving.cli``): an HTTP server for a wals2 serving SavedModel.

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
- TensorFlow Serving's REST API (``serving.tf_serving``): ``POST /v1/models/<name>[/versions/<v>]:predict``,
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
messages aside), work beyond the limits a 413 naming the limit and its flag. The transport is uvicorn with h11
(``serving.server``) and the routes a Starlette application (``serving.app``) that calls the model in two thread
lanes (cheap and heavy requests). The model only reads its variables and tables, so concurrent calls need no lock.
It loads the SavedModel with TensorFlow alone. SIGTERM drains: in-flight requests are answered, then it exits 0.

``--model-dir`` is either a SavedModel or a TF Serving base directory of numbered versions
(``<dir>/<version>/saved_model.pb``, ``serving.versions``): then the highest version is served and a new one
is loaded, warmed up and swapped in while serving.
"""

from __future__ import annotations

from trainer import environment, extras  # the standard library only

environment.set_defaults(training=False)  # before TensorFlow's import

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import posixpath  # noqa: E402
import sys  # noqa: E402

from serving.limits import HTTPLimits, WorkLimits  # noqa: E402  (no TensorFlow: --help stays quick)
from trainer import logs  # noqa: E402

logger = logging.getLogger("trainer.serve")


class _Fixed:
    """One model, served as it was loaded."""

    def __init__(self, recommender):
        self.current = recommender


def build_parser() -> argparse.ArgumentParser:
    defaults_work, defaults_http = WorkLimits(), HTTPLimits()
    parser = argparse.ArgumentParser(
        prog="python -m trainer.serve",
        description="An HTTP server for a wals2 serving SavedModel: Vertex AI's prediction route, TF Serving's "
        "REST (and optionally gRPC) API and TF1's recommendation app.",
    )
    parser.add_argument(
        "--model-dir",
        default=os.environ.get("AIP_STORAGE_URI"),
        help="a SavedModel directory, or a base directory of numbered versions (default $AIP_STORAGE_URI); "
        "local or gs://",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument(
        "--port",
        type=_port,
        default=None,
        help="default $AIP_HTTP_PORT or 8080; 0 picks a free port",
    )
    parser.add_argument(
        "--grpc-port",
        type=_port,
        default=None,
        help="also serve TF Serving's gRPC PredictionService and ModelService on this port (TF Serving's is 8500; "
        "0 picks a free port; default off)",
    )
    parser.add_argument(
        "--model-name",
        default=os.environ.get("MODEL_NAME"),
        help="the <name> of the TF Serving routes /v1/models/<name> (default $MODEL_NAME, else the name of a "
        "versioned --model-dir such as models/wals2, as pipeline.local --name writes it, else wals)",
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
        help="threads of the heavy lane that call the model (the light lane has its own 16; default %(default)s)",
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
    group.add_argument(
        "--drain-timeout",
        type=_positive_float,
        default=defaults_http.drain_timeout_s,
        help="seconds SIGTERM waits for in-flight requests before it cancels them (default %(default)s)",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=5.0,
        help="seconds between looks for a new version when --model-dir holds numbered versions (default 5)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one log line per request: method, path, status, latency, route (default on)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def default_model_name(model_dir: str, versioned: bool) -> str:
    """The TF Serving name without --model-name: a versioned base directory's own name (TF Serving's convention,
    and what ``pipeline.local --name`` writes), else ``wals``."""
    name = posixpath.basename(model_dir.rstrip("/")) if versioned else ""
    return name if name and not set(name) & set("/:?#%") else "wals"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a port number in [0, 65535], got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"should be a port number in [0, 65535], got {text!r}")
    return value


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.port is None:
        try:
            args.port = _port(os.environ.get("AIP_HTTP_PORT", "8080"))
        except argparse.ArgumentTypeError as err:
            parser.error(f"$AIP_HTTP_PORT (the default of --port) {err}")
    logs.configure(args.verbose)
    if not args.model_dir:
        logger.error("`--model-dir` should name a SavedModel directory (or set AIP_STORAGE_URI).")
        return 2
    import tensorflow as tf

    from serving import versions
    from serving.model import Recommender
    from serving.requests import TF1_ROUTE

    try:
        from serving.app import create_app  # Starlette, uvicorn, Prometheus, gRPC: the serve extra
    except ModuleNotFoundError as err:
        logger.error("%s", extras.missing(err, "python -m trainer.serve"))
        return 1

    try:
        if versions.is_versioned(args.model_dir):
            models = versions.VersionedModels(args.model_dir)
            models.watch(args.poll_interval)
        else:
            models = _Fixed(Recommender(args.model_dir))
    except (OSError, KeyError, ValueError, AttributeError, tf.errors.OpError) as err:
        logger.error("cannot load a wals2 serving SavedModel from %s: %s", args.model_dir, err)
        return 1
    if not args.model_name:
        args.model_name = default_model_name(args.model_dir, isinstance(models, versions.VersionedModels))
    work = WorkLimits(args.max_instances, args.max_results, args.max_fold_in_items, args.max_candidates)
    http = HTTPLimits(
        max_connections=args.max_connections,
        workers=args.workers,
        max_body_bytes=args.max_body_bytes,
        idle_timeout_s=args.idle_timeout,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        drain_timeout_s=args.drain_timeout,
    )
    health = os.environ.get("AIP_HEALTH_ROUTE", "/health")
    predict = os.environ.get("AIP_PREDICT_ROUTE", "/predict")
    app = create_app(models, work, http, health, predict, args.model_name, args.access_log)

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

    from serving.server import make_server

    grpc_server = None
    if args.grpc_port is not None:
        from serving import grpc_service

        try:
            grpc_server, grpc_port = grpc_service.start(
                models, work, args.model_name, args.host, args.grpc_port, args.workers, args.max_body_bytes
            )
        except OSError as err:
            logger.error("%s", err)
            return 1
        logger.info("TF Serving gRPC PredictionService and ModelService on %s:%d", args.host, grpc_port)

    server = make_server(app, args.host, args.port, http, ready)
    try:
        server.run()
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=args.drain_timeout).wait()
        if hasattr(models, "stop"):
            models.stop()
        app.state.lanes.shutdown()
    if not server.started:
        return 1
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
