"""The request parsing of the Vertex AI and TF1 routes: validated values in, the model's answers out.

Every function raises ``serving.model.BadRequest`` for a client error; ``plain`` marks TF1's text/plain messages.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from urllib.parse import parse_qs

from serving.limits import BadRequest, WorkLimits
from serving.model import Recommender, brief, load_json, rating, raw_id

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


def parse_predict(body, recommender: Recommender, limits: WorkLimits) -> list[dict]:
    """Validates a Vertex request body (bytes, or its value already parsed by ``load_json``) and returns its
    predictions (one per instance, in order)."""
    request = load_json(body) if isinstance(body, (bytes, bytearray)) else body
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
