"""TensorFlow Serving's gRPC API over the served model: ``PredictionService`` (Predict, GetModelMetadata) and
``ModelService`` (GetModelStatus), with the protos and stubs of ``tensorflow-serving-api``.

A TF Serving gRPC client works unchanged (``--grpc-port``)::

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel("localhost:8500"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "wals"
    request.model_spec.signature_name = "recommend"
    request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(["1", "2"]))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto(5, tf.int32))
    stub.Predict(request).outputs["item_ids"]

Inputs are checked against the signature's specs (dtype, rank, fixed dims, finite floats) and the REST routes'
``WorkLimits``; a client error is ``INVALID_ARGUMENT``, work beyond a limit ``RESOURCE_EXHAUSTED``, an unknown
model or version ``NOT_FOUND``, all with the REST route's message.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import tf_serving
from serving.limits import BadRequest, WorkLimits
from serving.model import FLOAT32_MAX, LANE, Recommender

logger = logging.getLogger(__name__)

_CODES = {
    HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _inputs(request: predict_pb2.PredictRequest, recommender: Recommender, signature: str) -> dict[str, np.ndarray]:
    specs = recommender.input_specs[signature]
    if set(request.inputs) != set(specs):
        raise BadRequest(
            f"The {signature!r} signature takes the inputs {sorted(specs)}. Received: {sorted(request.inputs)}"
        )
    out = {}
    for name, spec in specs.items():
        proto = request.inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            want, got = tf.dtypes.as_dtype(spec.dtype).name, tf.dtypes.as_dtype(proto.dtype).name
            raise BadRequest(f"`inputs.{name}` should have dtype {want}. Received: {got}")
        try:
            value = tf.make_ndarray(proto)
        except (TypeError, ValueError) as err:
            raise BadRequest(f"`inputs.{name}` is not a valid TensorProto: {err}") from None
        want = spec.shape.as_list()
        if value.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, value.shape)):
            shown = "[" + ", ".join("None" if w is None else str(w) for w in want) + "]"
            raise BadRequest(f"`inputs.{name}` should have shape {shown}. Received shape {list(value.shape)}")
        if value.ndim and value.shape[0] == 0:
            raise BadRequest(f"`inputs.{name}` should hold at least one row. Received shape {list(value.shape)}")
        if spec.dtype.is_floating and not (np.isfinite(value).all() and np.abs(value).max() <= FLOAT32_MAX):
            raise BadRequest(f"`inputs.{name}` should be finite float32 numbers")
        out[name] = value
    return out


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models, limits: WorkLimits, model_name: str):
        self.models = models
        self.limits = limits
        self.model_name = model_name

    def _abort(self, context, err: BadRequest):
        context.abort(_CODES.get(err.status, grpc.StatusCode.INVALID_ARGUMENT), str(err))

    def Predict(self, request, context):  # noqa: N802 (the proto's name)
        try:
            recommender = self._served(request.model_spec)
            signature = request.model_spec.signature_name or "serving_default"
            if signature not in recommender.signatures:
                raise BadRequest(
                    f"Serving signature name: {signature!r} not found in signature def; "
                    f"the model has {', '.join(sorted(recommender.signatures))}"
                )
            inputs = _inputs(request, recommender, signature)
            outputs = tf_serving.run(signature, inputs, recommender, self.limits, "inputs.ratings")
        except BadRequest as err:
            self._abort(context, err)
        if request.output_filter:
            unknown = sorted(set(request.output_filter) - set(outputs))
            if unknown:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"output_filter names unknown outputs {unknown}")
            outputs = {name: outputs[name] for name in request.output_filter}
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = int(recommender.version)
        response.model_spec.signature_name = signature
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            recommender = self._served(request.model_spec)
        except BadRequest as err:
            self._abort(context, err)
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'metadata_field should be ["signature_def"]. Received: {list(request.metadata_field)}',
            )
        defs = get_model_metadata_pb2.SignatureDefMap()
        json_format.ParseDict(tf_serving.metadata(recommender, self.model_name)["metadata"]["signature_def"], defs)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = int(recommender.version)
        response.metadata["signature_def"].Pack(defs)
        return response

    def _served(self, spec) -> Recommender:
        recommender = self.models.current
        version = str(spec.version.value) if spec.HasField("version") else None
        if spec.name != self.model_name or version not in (None, recommender.version):
            raise tf_serving.not_found(spec.name, version)
        return recommender


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, prediction: PredictionService):
        self.prediction = prediction

    def GetModelStatus(self, request, context):  # noqa: N802
        try:
            recommender = self.prediction._served(request.model_spec)
        except BadRequest as err:
            self.prediction._abort(context, err)
        response = get_model_status_pb2.GetModelStatusResponse()
        json_format.ParseDict(tf_serving.status(recommender), response)
        return response


def _name_lane() -> None:
    LANE.name = "grpc"


def start(models, limits: WorkLimits, model_name: str, host: str, port: int, workers: int, max_message_bytes: int):
    """Starts the gRPC server on ``host:port`` (0: a free port); returns (server, bound port)."""
    server = grpc.server(
        ThreadPoolExecutor(workers, thread_name_prefix="serve-grpc", initializer=_name_lane),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    prediction = PredictionService(models, limits, model_name)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(prediction), server)
    try:
        bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise OSError(f"cannot bind the gRPC port {host}:{port} (--grpc-port)")
    server.start()
    return server, bound
