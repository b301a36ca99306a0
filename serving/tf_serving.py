"""TensorFlow Serving's REST API over a loaded ``Recommender``: predict in row and columnar format, status, metadata.

- ``POST /v1/models/<name>[/versions/<v>]:predict`` with ``{"signature_name": ..., "instances": [...]}`` (row
  format: one entry per batch row, an object of named inputs, or the bare value when the signature has one input,
  such as ``["196"]``) -> ``{"predictions": [...]}`` (one object of named outputs per row), or
  ``{"inputs": {...}}`` (columnar: whole tensors by name, or the bare tensor for a one-input signature) ->
  ``{"outputs": {...}}``. ``signature_name`` defaults to ``serving_default``. Strings may be sent as
  ``{"b64": ...}``; outputs that are not UTF-8 come back so. Scores of empty slots are ``-Infinity``, as TF
  Serving writes them.
- ``GET /v1/models/<name>[/versions/<v>]``: ``{"model_version_status": [...]}``; ``.../metadata``: the
  signature defs.

The row format cannot carry a scalar input such as the ``k`` of ``recommend``, ``recommend_from``,
``similar_items`` and ``similar_users``: they take the columnar format,
``{"signature_name": "recommend", "inputs": {"user_id": ["1", "2"], "k": 5}}`` or
``{"signature_name": "similar_items", "inputs": {"item_id": ["50"], "k": 5}}``.
"""

from __future__ import annotations

import base64
import binascii
import re
from http import HTTPStatus

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from serving.limits import BadRequest, WorkLimits
from serving.model import Recommender, brief, fold_in_not_finite, load_json, rating, raw_id

ROUTE = re.compile(r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<tail>:predict|/metadata)?")
_INT32 = (-(2**31), 2**31 - 1)


def not_found(name: str, version: str | None) -> BadRequest:
    """TF Serving's 404 for a model name or version that is not served."""
    which = f"Latest({name})" if version is None else f"Specific({name}, {version})"
    return BadRequest(f"Servable not found for request: {which}", HTTPStatus.NOT_FOUND)


def status(recommender: Recommender) -> dict:
    """The body of ``GET /v1/models/<name>``: the served version, AVAILABLE."""
    return {
        "model_version_status": [
            {"version": recommender.version, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def metadata(recommender: Recommender, name: str) -> dict:
    """The body of ``GET /v1/models/<name>/metadata``: every signature's inputs and outputs."""

    def info(spec) -> dict:
        dims = [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape.as_list()]
        # TF Serving's enum names (DT_FLOAT, DT_STRING, DT_INT32), as its protos' JSON form writes them.
        dtype = types_pb2.DataType.Name(spec.dtype.as_datatype_enum)
        return {"dtype": dtype, "tensor_shape": {"dim": dims, "unknown_rank": False}}

    defs = {}
    for signature, fn in recommender.signatures.items():
        defs[signature] = {
            "inputs": {n: dict(info(s), name=n) for n, s in recommender.input_specs[signature].items()},
            "outputs": {n: dict(info(s), name=n) for n, s in fn.structured_outputs.items()},
            "method_name": "tensorflow/serving/predict",
        }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": recommender.version},
        "metadata": {"signature_def": {"signature_def": defs}},
    }


def predict(body, recommender: Recommender, limits: WorkLimits) -> dict:
    """Answers a TF Serving predict request body (bytes, or its value already parsed by ``load_json``; see the
    module docstring); raises BadRequest."""
    request = load_json(body) if isinstance(body, (bytes, bytearray)) else body
    if not isinstance(request, dict):
        raise BadRequest(f"The request body should be a JSON object. Received: {brief(request)}")
    extra = sorted(set(request) - {"signature_name", "instances", "inputs"})
    if extra:
        raise BadRequest(
            f'The request should have only "signature_name" and "instances" or "inputs". Received: {brief(extra)}'
        )
    if ("instances" in request) == ("inputs" in request):
        raise BadRequest('The request should have exactly one of "instances" (row format) or "inputs" (columnar).')
    signature = request.get("signature_name", "serving_default")
    if not isinstance(signature, str) or signature not in recommender.signatures:
        raise BadRequest(
            f"Serving signature name: {brief(signature)} not found in signature def; "
            f"the model has {', '.join(sorted(recommender.signatures))}"
        )
    specs = recommender.input_specs[signature]
    rows = "instances" in request
    inputs = _rows(request["instances"], specs, signature) if rows else _columns(request["inputs"], specs)
    outputs = run(signature, inputs, recommender, limits, "instances[*].ratings" if rows else "inputs.ratings")
    if rows:
        names = list(outputs)
        batch = len(next(iter(outputs.values())))
        if len(names) == 1:
            return {"predictions": [_json(outputs[names[0]][b]) for b in range(batch)]}
        return {"predictions": [{n: _json(outputs[n][b]) for n in names} for b in range(batch)]}
    if len(outputs) == 1:
        return {"outputs": _json(next(iter(outputs.values())))}
    return {"outputs": {name: _json(value) for name, value in outputs.items()}}


def run(
    signature: str, inputs: dict[str, np.ndarray], recommender: Recommender, limits: WorkLimits, ratings: str
) -> dict[str, np.ndarray]:
    """Runs ``signature`` on checked numpy ``inputs`` within ``limits``: its numpy outputs (REST and gRPC).

    ``ratings`` names the fold-in ratings in the 400 of ratings that overflow the solve."""
    _check_work(signature, inputs, recommender, limits)
    if signature == "serving_default":
        outputs = recommender.top_items(list(inputs["user_id"]), None)
    elif signature == "recommend":
        outputs = recommender.top_items(list(inputs["user_id"]), int(inputs["k"]))
    else:
        outputs = recommender.call(signature, inputs)
    if signature == "fold_in_recommend":
        filled = outputs["item_ids"] != b""
        broken = np.flatnonzero(~np.all(np.isfinite(outputs["scores"]) | ~filled, axis=1))
        if broken.size:  # -Infinity marks empty slots; NaN is noise
            row = int(broken[0])
            rated = np.asarray([bool(i) for i in inputs["item_ids"][row]])  # "" pads a row
            raise fold_in_not_finite(ratings, inputs["ratings"][row][rated])
    return outputs


def _rows(instances, specs: dict, signature: str) -> dict[str, np.ndarray]:
    """Row format -> one array per input (rows stacked on dim 0)."""
    if not isinstance(instances, list) or not instances:
        raise BadRequest(f'"instances" should be a non-empty list. Received: {brief(instances)}')
    scalars = [n for n, s in specs.items() if s.shape.rank == 0]
    if scalars:
        names = ", ".join(f"{n!r}" for n in scalars)
        example = ", ".join(f'"{n}": [...]' if n not in scalars else f'"{n}": ...' for n in specs)
        raise BadRequest(
            f"The {signature!r} signature has the scalar input {names}, which the row format cannot carry "
            f'(every input of a row shares dim 0): send the columnar format {{"signature_name": "{signature}", '
            f'"inputs": {{{example}}}}}'
        )
    names = sorted(specs)
    columns: dict[str, list] = {n: [] for n in names}
    for b, instance in enumerate(instances):
        if len(names) == 1 and not (isinstance(instance, dict) and set(instance) == {names[0]}):
            columns[names[0]].append(instance)
            continue
        if not isinstance(instance, dict) or set(instance) != set(names):
            raise BadRequest(
                f"instances[{b}] should be an object with the inputs {names} of {signature!r}. "
                f"Received: {brief(instance)}"
            )
        for n in names:
            columns[n].append(instance[n])
    return {n: _array(columns[n], specs[n], f"instances[*].{n}") for n in names}


def _columns(inputs, specs: dict) -> dict[str, np.ndarray]:
    """Columnar format -> one array per input."""
    names = sorted(specs)
    if len(names) == 1 and not (isinstance(inputs, dict) and set(inputs) == set(names)):
        inputs = {names[0]: inputs}
    if not isinstance(inputs, dict) or set(inputs) != set(names):
        got = sorted(inputs) if isinstance(inputs, dict) else brief(inputs)
        raise BadRequest(f'"inputs" should be an object with the inputs {names}. Received: {got}')
    return {n: _array(inputs[n], specs[n], f"inputs.{n}") for n in names}


def _array(value, spec: tf.TensorSpec, where: str) -> np.ndarray:
    """A rectangular nested list -> numpy array of ``spec``'s dtype and rank; BadRequest naming ``where``."""
    shape, leaves = _shape(value, where)
    want = spec.shape.as_list()
    if len(shape) != len(want) or any(w is not None and w != s for w, s in zip(want, shape)):
        shown = "a scalar" if not want else "[" + ", ".join("None" if w is None else str(w) for w in want) + "]"
        raise BadRequest(f"`{where}` should have shape {shown}. Received shape {shape}")
    if shape and shape[0] == 0:
        raise BadRequest(f"`{where}` should hold at least one row. Received shape {shape}")
    if spec.dtype == tf.string:
        flat = np.array([_string(v, where) for v in leaves], dtype=object)
    elif spec.dtype.is_floating:
        flat = np.array([rating(v, where) for v in leaves], dtype=spec.dtype.as_numpy_dtype)
    elif spec.dtype.is_integer:
        flat = np.array([_integer(v, where) for v in leaves], dtype=spec.dtype.as_numpy_dtype)
    elif spec.dtype == tf.bool:
        if not all(isinstance(v, bool) for v in leaves):
            raise BadRequest(f"`{where}` should hold true / false. Received: {brief(leaves[:3])}")
        flat = np.array(leaves, dtype=bool)
    else:
        raise BadRequest(f"`{where}` has dtype {spec.dtype.name}, which this server does not feed")
    return flat.reshape(shape)


def _shape(value, where: str) -> tuple[list[int], list]:
    """(shape, leaves in row-major order) of a nested list; BadRequest if it is ragged."""
    shape: list[int] = []
    level = [value]
    while level and isinstance(level[0], list):
        if not all(isinstance(v, list) for v in level):
            raise BadRequest(f"`{where}` mixes lists and values at depth {len(shape)}")
        lengths = {len(v) for v in level}
        if len(lengths) > 1:
            raise BadRequest(
                f"`{where}` is ragged: lists of lengths {sorted(lengths)[:5]} at depth {len(shape)} "
                '(pad item_ids with "" and ratings with 0)'
            )
        shape.append(lengths.pop())
        level = [x for v in level for x in v]
    if any(isinstance(v, list) for v in level):
        raise BadRequest(f"`{where}` mixes lists and values at depth {len(shape)}")
    return shape, level


def _string(value, where: str):
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"`{where}` has a b64 value that is not base64: {brief(value)}") from None
    return raw_id(value, where)


def _integer(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not _INT32[0] <= value <= _INT32[1]:
        raise BadRequest(f"`{where}` should be int32 integers. Received: {brief(value)}")
    return value


def _check_work(signature: str, inputs: dict[str, np.ndarray], recommender: Recommender, limits: WorkLimits):
    batch = max((len(v) for v in inputs.values() if v.ndim), default=1)
    limits.check_instances(batch)
    if "k" in inputs:  # recommend, recommend_from, similar_items (k <= items) and similar_users (k <= users)
        most = recommender.num_users if signature == "similar_users" else recommender.num_items
        k = int(inputs["k"])
        if not 1 <= k <= most:
            raise BadRequest(f"`inputs.k` should be an integer in [1, {most}]. Received: {k}")
        limits.check_results(batch, k)
    elif signature in ("serving_default", "fold_in_recommend"):
        limits.check_results(batch, recommender.top_k)
    if signature == "fold_in_recommend":
        limits.check_fold_in(*inputs["item_ids"].shape)
        if inputs["item_ids"].shape != inputs["ratings"].shape:
            raise BadRequest(
                f"`item_ids` and `ratings` should have the same shape. "
                f"Received: {list(inputs['item_ids'].shape)} and {list(inputs['ratings'].shape)}"
            )
    if signature == "recommend_from":
        candidates = inputs["candidate_item_ids"]
        if candidates.shape[0] != len(inputs["user_id"]):
            raise BadRequest(
                "`inputs.candidate_item_ids` should have one row per `user_id`. "
                f"Received: {candidates.shape[0]} rows for {len(inputs['user_id'])} user ids"
            )
        limits.check_candidates(*candidates.shape)


def _json(value):
    """A numpy output (array or scalar) as JSON values; bytes as UTF-8 text, else {"b64": ...}."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_json(v) for v in value] if value.ndim else _json(value.item())
        return value.tolist()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, np.generic):
        return value.item()
    return value
