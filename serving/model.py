"""The served SavedModel, the per-request work limits and the request-value checks that every route shares.

Loads a wals2 serving SavedModel (``wals2/export.py``) with TensorFlow alone: no wals2 module is imported.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import threading
from concurrent.futures import Future

import numpy as np
import tensorflow as tf

from serving.limits import BadRequest

logger = logging.getLogger(__name__)

REQUIRED_SIGNATURES = ("serving_default", "recommend", "fold_in_recommend")
# signature -> (query input, id output, flag output); a model exported before they existed answers a 400 for them.
SIMILAR_SIGNATURES = {
    "similar_items": ("item_id", "item_ids", "known_item"),
    "similar_users": ("user_id", "user_ids", "known_user"),
}
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_INT_DIGITS = 19  # a JSON integer with more digits is refused before Python converts it
BATCH_USERS = 256  # concurrent top-k requests are joined into one signature call of at most this many users
CHUNK_ROWS = 64  # rows per signature call (see Recommender.call)
LANE = threading.local()
"""``LANE.name``: the executor lane of the calling thread (``serving.app`` sets it); each lane has its own batcher,
so that a cheap request is never joined into, nor queued behind, the calls of heavy ones."""


def _reason(message: str) -> str:
    """The line of a TensorFlow error message that says what went wrong, without the header, the node and the
    stack lines around it (the last such line; the header itself when there is none)."""
    skip = ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ")
    lines = [line.strip() for line in message.splitlines()]
    reasons = [line for line in lines if line and not line.startswith(skip)]
    return reasons[-1] if reasons else message.strip() or "no reason given"


def load_json(body: bytes):
    """The JSON value of a request body; BadRequest (400) for anything that is not bounded, valid JSON."""
    try:
        return json.loads(body, parse_int=_bounded_int)
    except RecursionError:
        raise BadRequest("The request body should be JSON nested less deeply (Python's recursion limit).") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise BadRequest(f"The request body should be JSON in UTF-8. Received invalid JSON: {err}") from None


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadRequest(
            f"JSON integers should have at most {MAX_INT_DIGITS} digits (send a long id as a string). "
            f"Received an integer of {len(text.lstrip('-'))} digits."
        )
    return int(text)


def raw_id(value, where: str) -> str:
    """A raw id: a string that is valid Unicode (no lone surrogate), or an integer as its decimal string."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise BadRequest(
                f"`{where}` should be valid Unicode. Received a string with {err.reason} at index {err.start}: "
                f"{brief(value)}"
            ) from None
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRequest(f"`{where}` should be a string or an integer id. Received: {brief(value)}")


def rating(value, where: str) -> float:
    """A finite number that float32 holds (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"`{where}` should be finite numbers. Received: {brief(value)}")
    if abs(value) > FLOAT32_MAX:
        raise BadRequest(f"`{where}` should be finite float32 numbers (|x| <= {FLOAT32_MAX:.4g}). Received: {value:g}")
    return float(value)


def brief(value, limit: int = 80) -> str:
    """``value`` as JSON (surrogates escaped), cut to ``limit`` characters."""
    text = repr(value) if isinstance(value, bytes) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fold_in_not_finite(field: str, ratings: np.ndarray) -> BadRequest:
    """The 400 of a fold-in whose scores are not finite (JSON has no NaN, and the answer would be noise)."""
    given = "no ratings"
    if np.size(ratings):
        given = f"ratings from {float(np.min(ratings)):g} to {float(np.max(ratings)):g}"
    return BadRequest(
        f"`{field}` make the fold-in solve overflow float32 ({given}); give ratings on the scale and sign the model "
        "was trained on"
    )


class Recommender:
    """A loaded wals2 serving SavedModel: its signatures, their input specs, and calls with validated inputs.

    Args:
        model_dir: the SavedModel directory (local or any TF filesystem such as gs://).
        version: the version it is served as (TF Serving's status routes report it).

    Raises:
        OSError, KeyError, ValueError, tf.errors.OpError: the directory holds no wals2 serving SavedModel, or the
        warm-up call of a signature failed.
    """

    def __init__(self, model_dir: str, version: str = "1"):
        loaded = tf.saved_model.load(model_dir)
        self._loaded = loaded  # keeps the restored variables and tables alive
        self.model_dir = model_dir
        self.version = version
        self.signatures = dict(loaded.signatures)
        missing = [name for name in REQUIRED_SIGNATURES if name not in self.signatures]
        if missing:
            raise KeyError(f"{model_dir} has no signature {', '.join(missing)}: not a wals2 serving SavedModel")
        self.input_specs = {name: fn.structured_input_signature[1] for name, fn in self.signatures.items()}
        self.num_items = int(loaded.item_vocabulary.shape[0])
        self.num_users = int(loaded.user_vocabulary.shape[0])
        self.top_k = int(self.signatures["serving_default"].structured_outputs["scores"].shape[1])
        self._batchers: dict[str, _Batcher] = {}
        self._batchers_lock = threading.Lock()
        self.warm_up()

    def warm_up(self) -> None:
        """Calls every signature once (the first call of each is slow) and checks the shapes it answers."""
        for k in (None, 1):
            (answer,) = self.users(["warm-up"], k)
            if len(answer["item_ids"]) != (k or self.top_k):
                raise ValueError(f"{self.model_dir}: the warm-up call answered {len(answer['item_ids'])} items")
        self.new_users([(["warm-up"], [0.0])], None)
        if "score" in self.signatures:
            self.call("score", {"user_id": np.array(["warm-up"], object), "item_id": np.array(["warm-up"], object)})
        if "recommend_from" in self.signatures:
            self.users_from([("warm-up", ["warm-up"])], 1)
        for signature in SIMILAR_SIGNATURES:
            if signature in self.signatures:
                self.similar(signature, ["warm-up"], 1)

    def require(self, signature: str) -> None:
        """BadRequest (400) if the model has no ``signature`` (a SavedModel exported before it existed)."""
        if signature not in self.signatures:
            raise BadRequest(
                f"The served model has no {signature!r} signature (export it again with this version of wals2); "
                f"it has {', '.join(sorted(self.signatures))}"
            )

    def call(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs ``signature`` on numpy ``inputs`` (already checked against its specs); numpy outputs.

        A batch of more than ``CHUNK_ROWS`` rows is run ``CHUNK_ROWS`` at a time: TensorFlow's intra-op threads
        are shared by every call, so a cheap call waits for at most one chunk of a heavy one, not all of it."""
        rows = max((len(v) for v in inputs.values() if np.ndim(v)), default=0)
        if rows <= CHUNK_ROWS:
            return self._call(signature, inputs)
        parts = [
            self._call(signature, {n: v[start : start + CHUNK_ROWS] if np.ndim(v) else v for n, v in inputs.items()})
            for start in range(0, rows, CHUNK_ROWS)
        ]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _call(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        specs = self.input_specs[signature]
        feeds = {name: tf.constant(value, specs[name].dtype) for name, value in inputs.items()}
        try:
            out = self.signatures[signature](**feeds)
        except tf.errors.InvalidArgumentError as err:
            raise BadRequest(f"The {signature!r} signature refused its inputs: {_reason(err.message)}") from None
        return {name: value.numpy() for name, value in out.items()}

    def _call_top_k(self, user_ids: list, k: int | None) -> dict[str, np.ndarray]:
        ids = np.array(user_ids, dtype=object)
        if k is None:
            return self.call("serving_default", {"user_id": ids})
        return self.call("recommend", {"user_id": ids, "k": np.int32(k)})

    def top_items(self, user_ids: list, k: int | None) -> dict[str, np.ndarray]:
        """The outputs of ``serving_default`` (k None) or ``recommend`` for raw user ids (str or bytes).

        Calls from concurrent threads of one lane (``LANE``) are joined into one signature call per k
        (``_Batcher``)."""
        lane = getattr(LANE, "name", "default")
        batcher = self._batchers.get(lane)
        if batcher is None:
            with self._batchers_lock:
                batcher = self._batchers.setdefault(lane, _Batcher(self._call_top_k, BATCH_USERS))
        return batcher.submit(user_ids, k).result()

    def users(self, user_ids: list[str], k: int | None) -> list[dict]:
        """Top-k of known or unknown raw user ids (k None: the export's top_k), empty slots trimmed."""
        out = self.top_items(user_ids, k)
        return [
            dict(_trim(items, scores), known_user=bool(flag))
            for items, scores, flag in zip(out["item_ids"], out["scores"], out["known_user"])
        ]

    def new_users(
        self, rated: list[tuple[list[str], list[float]]], k: int | None, fields: list[str] | None = None
    ) -> list[dict]:
        """Fold-in top-k (the export's top_k, cut to k) of new users given (item ids, ratings).

        Raises:
            BadRequest: the ratings of a user (named by ``fields``) are so large that the fold-in solve
                overflows float32 (its scores are not finite): JSON has no NaN, and the answer would be noise.
        """
        width = max(len(items) for items, _ in rated)
        ids = np.full((len(rated), width), "", dtype=object)
        values = np.zeros((len(rated), width), np.float32)
        for b, (items, ratings) in enumerate(rated):
            ids[b, : len(items)] = items
            values[b, : len(items)] = ratings
        out = self.call("fold_in_recommend", {"item_ids": ids, "ratings": values})
        for row, (items, scores) in enumerate(zip(out["item_ids"], out["scores"])):
            if not np.isfinite(scores[items != b""]).all():
                field = fields[row] if fields else f"ratings of fold-in user {row}"
                raise fold_in_not_finite(field, values[row, : len(rated[row][0])])
        rows = zip(out["item_ids"], out["scores"], out["num_known_items"])
        return [dict(_trim(items[:k], scores[:k]), num_known_items=int(n)) for items, scores, n in rows]

    def users_from(self, rows: list[tuple[str, list[str]]], k: int) -> list[dict]:
        """``recommend_from``: top-k of (raw user id, candidate item ids) rows, empty slots trimmed."""
        self.require("recommend_from")
        width = max(len(candidates) for _, candidates in rows)
        ids = np.full((len(rows), width), "", dtype=object)
        for b, (_, candidates) in enumerate(rows):
            ids[b, : len(candidates)] = candidates
        users = np.array([user for user, _ in rows], dtype=object)
        out = self.call("recommend_from", {"user_id": users, "candidate_item_ids": ids, "k": np.int32(k)})
        return [
            dict(_trim(items, scores), known_user=bool(flag))
            for items, scores, flag in zip(out["item_ids"], out["scores"], out["known_user"])
        ]

    def similar(self, signature: str, ids: list[str], k: int) -> list[dict]:
        """``similar_items`` / ``similar_users`` of raw ids: ``{"item_ids" | "user_ids", "scores", flag}`` each."""
        self.require(signature)
        query, found, flag = SIMILAR_SIGNATURES[signature]
        out = self.call(signature, {query: np.array(ids, dtype=object), "k": np.int32(k)})
        return [
            {**_trim(items, scores, found), flag: bool(known)}
            for items, scores, known in zip(out[found], out["scores"], out[flag])
        ]


class _Batcher:
    """Joins concurrent top-k calls into one call of ``run(user_ids, k)`` per k, first come first served.

    Each caller's users go into a queue; one thread (started on demand, gone after a second with nothing to do)
    takes everything queued, up to ``max_users`` users (a larger request goes alone), runs one call per distinct k
    and hands each caller its rows. With W worker threads waiting, one call serves up to W requests: the cost of a
    call grows far slower than its batch (one user 0.7 ms, eight 1.5 ms on latest-small), so throughput grows with
    the number of concurrent requests instead of falling.
    """

    def __init__(self, run, max_users: int):
        self._run = run
        self._max_users = max_users
        self._queue: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._running = False

    def submit(self, user_ids: list[str], k: int | None) -> Future:
        """A future of ``run``'s outputs for ``user_ids`` alone (rows sliced out of the joined call)."""
        future: Future = Future()
        with self._ready:
            self._queue.append((user_ids, k, future))
            if self._running:
                self._ready.notify()
            else:
                self._running = True
                threading.Thread(target=self._loop, name="serve-batcher", daemon=True).start()
        return future

    def _loop(self) -> None:
        while True:
            with self._ready:
                if not self._queue:
                    self._ready.wait(timeout=1.0)
                    if not self._queue:
                        self._running = False
                        return
                batch = [self._queue.popleft()]
                total = len(batch[0][0])
                while self._queue and total + len(self._queue[0][0]) <= self._max_users:
                    total += len(self._queue[0][0])
                    batch.append(self._queue.popleft())
            groups: dict = {}
            for entry in batch:
                groups.setdefault(entry[1], []).append(entry)
            for k, entries in groups.items():
                try:
                    out = self._run([user for ids, _, _ in entries for user in ids], k)
                except BaseException as err:  # handed to every caller of this call, who re-raises it
                    for _, _, future in entries:
                        future.set_exception(err)
                    continue
                start = 0
                for ids, _, future in entries:
                    future.set_result({name: value[start : start + len(ids)] for name, value in out.items()})
                    start += len(ids)


def _trim(items: np.ndarray, scores: np.ndarray, name: str = "item_ids") -> dict:
    """JSON lists, without the empty slots ("" / -inf) of a user with fewer than k unseen items."""
    keep = items != b""
    # tolist() gives the same Python floats as float() of each float32, without a Python call per score.
    return {name: [i.decode() for i in items[keep]], "scores": scores[keep].tolist()}
