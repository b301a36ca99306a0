"""``python -m trainer.serve`` on a loopback port: Vertex, TF1 and TF Serving routes, hostile requests, limits."""

import base64
import http.client
import json
import math
import os
import pathlib
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT

import wals2
from wals2 import WALSModel, export_saved_model

HEALTH = "/v1/endpoints/1/deployedModels/2"  # the routes Vertex AI gives a custom container
PREDICT = "/v1/endpoints/1/deployedModels/2:predict"
NUM_ITEMS = 9724
TEST_FLAGS = [
    *("--header-timeout", "1", "--body-timeout", "1", "--idle-timeout", "2"),
    *("--max-connections", "64", "--workers", "2", "--grpc-port", "0"),
]


class Server:
    """``python -m trainer.serve`` as a subprocess on 127.0.0.1: ``port``, ``pid``, ``log`` (its output lines)."""

    def __init__(self, model_dir, *flags, env=None):
        env = dict(
            os.environ, TF_CPP_MIN_LOG_LEVEL="2", AIP_HEALTH_ROUTE=HEALTH, AIP_PREDICT_ROUTE=PREDICT, **(env or {})
        )
        env.pop("AIP_HTTP_PORT", None)
        command = [sys.executable, "-m", "trainer.serve", "--model-dir", str(model_dir), "--host", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command, "--port", "0", *flags],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.pid = self.process.pid
        self.log: list[str] = []
        lines: queue.Queue = queue.Queue()

        def pump():
            for line in self.process.stdout:
                self.log.append(line)
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        self.port = self.grpc_port = None
        deadline = time.monotonic() + 120
        while self.port is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                pytest.fail("the server did not start within 120 s: " + "".join(self.log))
            grpc_match = re.search(r"gRPC PredictionService and ModelService on 127\.0\.0\.1:(\d+)", line)
            if grpc_match:
                self.grpc_port = int(grpc_match.group(1))
            match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            self.port = int(match.group(1)) if match else None
            if self.port is None and self.process.poll() is not None:
                pytest.fail("the server exited: " + "".join(self.log))

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def proc_status(self, field):
        """A number from /proc/<pid>/status (VmRSS in kB, Threads), or None without /proc."""
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
                return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
        except OSError:
            return None


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(SavedModel path, train ratings, the in-process ServingModule) of a latest-small model."""
    ratings = wals2.load_bundled()
    train, _ = ratings.split(0.1, seed=0)
    model = WALSModel(ratings.num_users, ratings.num_items, latent_factors=5)
    model.compile(jit_compile=False)
    model.fit(train, epochs=2, verbose=0)
    path = tmp_path_factory.mktemp("serve") / "model"
    module = export_saved_model(model, str(path), top_k=10)
    return path, train, module


@pytest.fixture(scope="module")
def server(exported):
    path, _, _ = exported
    running = Server(path, *TEST_FLAGS)
    try:
        assert call(running.port, "GET", HEALTH)[0] == 200
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def served(server, exported):
    """(port, train ratings) of the module's server."""
    return server.port, exported[1]


def call(port, method, path, body=None, headers=None):
    """(status, content type, body text) of one request to 127.0.0.1:port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read().decode()
    finally:
        connection.close()


def predict(port, request):
    status, kind, text = call(port, "POST", PREDICT, request)
    return status, (json.loads(text) if kind == "application/json" else text)


def test_health_routes(served):
    port, _ = served
    assert call(port, "GET", HEALTH)[0] == 200
    for route in (HEALTH, "/readiness_check"):
        status, kind, text = call(port, "GET", route)
        assert (status, kind, json.loads(text)) == (200, "application/json", {"status": "ok", "model_version": "1"})


def test_vertex_predict_known_unknown_and_new_users(served):
    port, train = served
    status, body = predict(
        port,
        {
            "instances": [
                {"user_id": "1"},
                {"user_id": 610},
                {"user_id": "999999"},
                {"item_ids": ["1", 50, "no-such-item"], "ratings": [5, 4.5, 3]},
            ]
        },
    )
    assert status == 200
    first, last, unknown, new = body["predictions"]
    assert first["known_user"] and last["known_user"] and not unknown["known_user"]
    assert len(first["item_ids"]) == len(first["scores"]) == 10 and first["scores"] == sorted(first["scores"])[::-1]
    seen = set(train.item_ids[train.items[train.users == 0]].astype(str))
    assert not seen & set(first["item_ids"])
    counts = train.item_counts()
    popular = train.item_ids[np.lexsort((np.arange(counts.size), -counts))[:10]].astype(str).tolist()
    assert unknown["item_ids"] == popular and unknown["scores"] == [0.0] * 10
    assert new["num_known_items"] == 2 and len(new["item_ids"]) == 10 and not {"1", "50"} & set(new["item_ids"])
    status, body = predict(port, {"instances": [{"user_id": "1"}], "parameters": {"k": 3}})
    assert status == 200 and body["predictions"][0]["item_ids"] == first["item_ids"][:3]


def test_vertex_similar_items_users_and_candidates(served, exported):
    port, train = served
    _, _, module = exported
    candidates = ["1", "2", "4", "no-item", "2"]
    status, body = predict(
        port,
        {
            "instances": [
                {"similar_to_item": "50"},
                {"user_id": "1", "candidate_item_ids": candidates},
                {"similar_to_user": 610},
                {"user_id": "1"},
                {"similar_to_item": "no-item"},
                {"user_id": "nobody", "candidate_item_ids": ["1", 50]},
            ],
            "parameters": {"k": 4},
        },
    )
    assert status == 200, body
    item, from_candidates, user, plain, unknown_item, unknown_from = body["predictions"]
    want = signature(module, "similar_items", item_id=["50", "no-item"], k=4)
    assert item == {
        "item_ids": [i.decode() for i in want["item_ids"][0]],
        "scores": pytest.approx(want["scores"][0], rel=1e-6),
        "known_item": True,
    }
    assert unknown_item["known_item"] is False and unknown_item["item_ids"] == [i.decode() for i in want["item_ids"][1]]
    counts = train.item_counts()
    popular = train.item_ids[np.lexsort((np.arange(counts.size), -counts))[:4]].astype(str).tolist()
    assert unknown_item["item_ids"] == popular and unknown_item["scores"] == [0.0] * 4
    assert plain == predict(port, {"instances": [{"user_id": "1"}], "parameters": {"k": 4}})[1]["predictions"][0]
    want = signature(module, "similar_users", user_id=["610"], k=4)
    assert user["user_ids"] == [i.decode() for i in want["user_ids"][0]] and user["known_user"] is True
    assert user["user_ids"][0] == "610" and user["scores"] == pytest.approx(want["scores"][0], rel=1e-6)
    want = signature(module, "recommend_from", user_id=["1"], candidate_item_ids=[candidates], k=4)
    kept = [i.decode() for i in want["item_ids"][0] if i]
    assert from_candidates == {
        "item_ids": kept,
        "scores": pytest.approx(want["scores"][0][: len(kept)], rel=1e-6),
        "known_user": True,
    }
    assert set(kept) <= {"2", "4"} and len(kept) == 2  # user 1 rated item 1; empty slots are trimmed
    assert unknown_from["known_user"] is False and sorted(unknown_from["item_ids"]) == ["1", "50"]
    assert unknown_from["scores"] == [0.0, 0.0]
    # Without parameters.k: the export's top_k.
    status, body = predict(port, {"instances": [{"similar_to_user": "1"}, {"similar_to_item": 1}]})
    assert status == 200 and [len(p["scores"]) for p in body["predictions"]] == [10, 10]


def test_tf1_recommendation_route(served):
    port, _ = served
    status, kind, text = call(port, "GET", "/recommendation?userId=1")
    assert status == 200 and kind == "application/json"
    articles = json.loads(text)["articles"]
    _, body = predict(port, {"instances": [{"user_id": "1"}]})
    assert articles == body["predictions"][0]["item_ids"][:5]  # TF1's default numRecs is 5
    status, _, text = call(port, "GET", "/recommendation?userId=1&numRecs=12")
    assert status == 200 and len(json.loads(text)["articles"]) == 12


def test_plain_similar_routes_and_candidates_on_the_tf1_route(served, exported):
    port, _ = served
    _, _, module = exported

    def ids(values):
        return [i.decode() for i in values if i]

    status, kind, text = call(port, "GET", "/similar_items?itemId=50&numRecs=3")
    want = signature(module, "similar_items", item_id=["50"], k=3)
    assert (status, kind, json.loads(text)) == (200, "application/json", {"item_ids": ids(want["item_ids"][0])})
    status, _, text = call(port, "GET", "/similar_users?userId=610")  # numRecs defaults to 5
    want = signature(module, "similar_users", user_id=["610"], k=5)
    assert (status, json.loads(text)) == (200, {"user_ids": ids(want["user_ids"][0])})
    status, _, text = call(port, "GET", "/recommendation?userId=1&numRecs=3&candidateItemIds=2,4,1,no-item")
    want = signature(module, "recommend_from", user_id=["1"], candidate_item_ids=[["2", "4", "1", "no-item"]], k=3)
    assert (status, json.loads(text)) == (200, {"articles": ids(want["item_ids"][0])})
    assert sorted(json.loads(text)["articles"]) == ["2", "4"]  # user 1 rated item 1
    assert call(port, "HEAD", "/similar_items?itemId=50")[0] == 200
    assert call(port, "POST", "/similar_items?itemId=50", "{}")[0] == 405


@pytest.mark.parametrize(
    "query, status, message",
    [
        ("/similar_items?itemId=no-item", 404, '`itemId` "no-item" is not in the model (or has no training ratings).'),
        ("/similar_users?userId=0", 404, '`userId` "0" is not in the model'),
        ("/similar_items", 400, "`itemId` should name an id: /similar_items?itemId=<id>&numRecs=<n>. Received"),
        ("/similar_items?itemId=", 400, "`itemId` should name an id"),
        (
            "/similar_users?userId=1&numRecs=611",
            400,
            "`numRecs` should be an integer in [1, 610]. Received: numRecs=611",
        ),
        ("/similar_items?itemId=1&numRecs=x", 400, "`numRecs` should be an integer in [1, 9724]. Received: numRecs=x"),
        ("/recommendation?userId=1&candidateItemIds=2,,4", 400, "`candidateItemIds` should be item ids separated by"),
        ("/recommendation?userId=1&candidateItemIds=", 400, "`candidateItemIds` should be item ids separated by"),
        ("/recommendation?userId=1&candidateItemIds=" + "1," * 100_000 + "1", 431, "request line and headers"),
    ],
)
def test_plain_similar_and_candidate_bad_requests_get_a_json_4xx(served, query, status, message):
    port, _ = served
    got, kind, text = call(port, "GET", query)
    assert (got, kind) == (status, "application/json") and message in json.loads(text)["error"], text


def test_tf1_candidates_of_an_unknown_user_get_tf1s_message(served):
    port, _ = served
    status, kind, text = call(port, "GET", "/recommendation?userId=999999&candidateItemIds=1,2")
    assert (status, kind, text) == (400, "text/plain; charset=utf-8", "User Id not found : 999999")


@pytest.mark.parametrize(
    "query, message",
    [
        ("", "No User Id provided."),
        ("?numRecs=3", "No User Id provided."),
        ("?userId=abc", "User id and number of recs arguments must be integers."),
        ("?userId=1&numRecs=2.5", "User id and number of recs arguments must be integers."),
        ("?userId=999999", "User Id not found : 999999"),
        ("?userId=0", "User Id not found : 0"),
        ("?userId=%D9%A1", "User id and number of recs arguments must be integers."),  # ARABIC-INDIC DIGIT ONE
        ("?userId=1_0", "User id and number of recs arguments must be integers."),
        ("?userId=%201", "User id and number of recs arguments must be integers."),
        ("?userId=1&numRecs=%EF%BC%93", "User id and number of recs arguments must be integers."),  # FULLWIDTH 3
    ],
)
def test_tf1_bad_requests_get_tf1_messages(served, query, message):
    port, _ = served
    assert call(port, "GET", "/recommendation" + query) == (400, "text/plain; charset=utf-8", message)


@pytest.mark.parametrize("num_recs", ["0", "-3", str(NUM_ITEMS + 1)])
def test_tf1_num_recs_out_of_range_is_a_json_400(served, num_recs):
    port, _ = served
    status, kind, text = call(port, "GET", f"/recommendation?userId=1&numRecs={num_recs}")
    assert (status, kind) == (400, "application/json")
    assert (
        json.loads(text)["error"] == f"`numRecs` should be an integer in [1, {NUM_ITEMS}]. Received: numRecs={num_recs}"
    )


@pytest.mark.parametrize(
    "body, status, message",
    [
        ("{not json", 400, "should be JSON"),
        ("[1, 2]", 400, 'JSON object with "instances"'),
        ({"inputs": []}, 400, 'JSON object with "instances"'),
        ({"instances": []}, 400, '"instances" should be a non-empty list'),
        ({"instances": {"user_id": "1"}}, 400, '"instances" should be a non-empty list'),
        ({"instances": ["1"]}, 400, 'instances[0] should be {"user_id": id}'),
        ({"instances": [{"user_id": "1", "k": 3}]}, 400, 'instances[0] should be {"user_id": id}'),
        ({"instances": [{"user_id": 1.5}]}, 400, "`instances[0].user_id` should be a string or an integer id"),
        ({"instances": [{"user_id": True}]}, 400, "`instances[0].user_id` should be a string or an integer id"),
        ({"instances": [{"user_id": None}]}, 400, "`instances[0].user_id` should be a string or an integer id"),
        ({"instances": [{"user_id": "1"}] * 1001}, 413, "at most 1000 instances (--max-instances). Received: 1001"),
        (
            {"instances": [{"user_id": "1"}] * 11, "parameters": {"k": NUM_ITEMS}},
            413,
            f"instances x k should be at most 100000 (--max-results). Received: 11 x {NUM_ITEMS} = {11 * NUM_ITEMS}",
        ),
        (
            {
                "instances": [{"item_ids": ["1"] * 1000, "ratings": [1] * 1000}]
                + [{"item_ids": ["1"], "ratings": [1]}] * 100
            },
            413,
            "fold-in instances x their longest item list should be at most 100000 (--max-fold-in-items). "
            "Received: 101 x 1000 = 101000",
        ),
        ('{"instances": [{"user_id": "\\ud800"}]}', 400, "`instances[0].user_id` should be valid Unicode"),
        (
            '{"instances": [{"item_ids": ["1", "\\udfff"], "ratings": [1, 2]}]}',
            400,
            "`instances[0].item_ids` should be valid Unicode",
        ),
        ('{"instances": [{"user_id": ' + "7" * 5000 + "}]}", 400, "JSON integers should have at most 19 digits"),
        ('{"instances": [{"user_id": "1"}], "parameters": {"k": ' + "5" * 5000 + "}}", 400, "at most 19 digits"),
        ('{"instances": [{"item_ids": ["1"], "ratings": [' + "9" * 400 + "]}]}", 400, "at most 19 digits"),
        ({"instances": [{"item_ids": ["1"], "ratings": [1e39]}]}, 400, "should be finite float32 numbers"),
        (  # float32 holds 3e38, but the fold-in solve overflows: no NaN scores in the answer
            {"instances": [{"user_id": "1"}, {"item_ids": ["1", "50"], "ratings": [3e38, 3e38]}]},
            400,
            "`instances[1].ratings` make the fold-in solve overflow float32 (ratings from 3e+38 to 3e+38)",
        ),
        (  # the range is that of the user's own ratings, not of the batch's padding
            {
                "instances": [
                    {"item_ids": ["1", "50", "260"], "ratings": [1, 2, 3]},
                    {"item_ids": ["1", "50"], "ratings": [3e38, 2e38]},
                ]
            },
            400,
            "`instances[1].ratings` make the fold-in solve overflow float32 (ratings from 2e+38 to 3e+38)",
        ),
        ('{"instances": ' + "[" * 5000 + "]" * 5000 + "}", 400, "nested less deeply"),
        (b'{"instances": [{"user_id": "\xff"}]}', 400, "should be JSON in UTF-8"),
        ({"instances": [{"user_id": "1"}], "parameters": {"k": 0}}, 400, '"parameters.k" should be an integer'),
        ({"instances": [{"user_id": "1"}], "parameters": {"k": 9725}}, 400, '"parameters.k" should be an integer'),
        ({"instances": [{"user_id": "1"}], "parameters": {"k": "5"}}, 400, '"parameters.k" should be an integer'),
        ({"instances": [{"user_id": "1"}], "parameters": {"top": 5}}, 400, '"parameters" should be an object'),
        ({"instances": [{"item_ids": ["1"], "ratings": [1, 2]}]}, 400, "lists of the same length"),
        (
            {"instances": [{"user_id": "1", "candidate_item_ids": []}]},
            400,
            "`instances[0].candidate_item_ids` should be a non-empty list of item ids. Received: []",
        ),
        (
            {"instances": [{"user_id": "1", "candidate_item_ids": "50"}]},
            400,
            "`instances[0].candidate_item_ids` should be a non-empty list",
        ),
        (
            {"instances": [{"user_id": "1", "candidate_item_ids": ["1", None]}]},
            400,
            "`instances[0].candidate_item_ids` should be a string or an integer id",
        ),
        ({"instances": [{"similar_to_item": [1]}]}, 400, "`instances[0].similar_to_item` should be a string"),
        ({"instances": [{"similar_to_user": 2.5}]}, 400, "`instances[0].similar_to_user` should be a string"),
        (
            {"instances": [{"similar_to_user": "1"}], "parameters": {"k": 611}},
            400,
            '"parameters.k" should be at most 610 (the users) for similar_to_user instances. Received: k=611',
        ),
        (
            {"instances": [{"user_id": "1", "candidate_item_ids": ["1"] * 1000}] * 101},
            413,
            "candidate instances x their longest candidate list should be at most 100000 (--max-candidates). "
            "Received: 101 x 1000 = 101000",
        ),
        (
            {"instances": [{"similar_to_item": "1"}] * 6 + [{"user_id": "1"}] * 5, "parameters": {"k": NUM_ITEMS}},
            413,
            f"Received: 11 x {NUM_ITEMS}",
        ),
        ({"instances": [{"item_ids": [], "ratings": []}]}, 400, "should hold at least 1 item"),
        ('{"instances": [{"item_ids": ["1"], "ratings": [NaN]}]}', 400, "should be finite numbers"),
        ({"instances": [{"item_ids": ["1"], "ratings": ["5"]}]}, 400, "should be finite numbers"),
        (
            {"instances": [{"item_ids": ["1"], "ratings": [5]}], "parameters": {"k": 11}},
            400,
            '"parameters.k" should be at most 10 for fold-in instances',
        ),
    ],
)
def test_vertex_bad_requests_get_a_clear_4xx(served, body, status, message):
    port, _ = served
    got, answer = predict(port, body)
    assert got == status and message in answer["error"], answer


def test_bad_http_requests_get_4xx(served):
    port, _ = served
    status, _, text = call(port, "POST", PREDICT, headers={"Content-Length": str(64 << 20)})
    assert status == 413 and "at most" in json.loads(text)["error"]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.putrequest("POST", PREDICT)
    connection.endheaders()  # no Content-Length: an empty body
    response = connection.getresponse()
    assert response.status == 400 and "should be JSON" in json.loads(response.read())["error"]
    connection.close()
    assert call(port, "GET", "/nowhere")[0] == 404
    assert call(port, "POST", "/nowhere", {"instances": [{"user_id": "1"}]})[0] == 404
    for path in (HEALTH + "/", "/v1/models/", PREDICT + "/"):  # no redirect to the route without the slash
        status, kind, text = call(port, "GET", path, headers={"Host": "elsewhere.example"})
        assert (status, kind) == (404, "application/json") and json.loads(text)["error"].startswith("No route")
    assert call(port, "DELETE", PREDICT)[0] == 405
    status, _, text = call(port, "GET", PREDICT)  # a known route, the wrong method
    assert status == 405 and "use POST" in json.loads(text)["error"]
    assert call(port, "GET", HEALTH)[0] == 200  # still serving


def test_concurrent_requests_agree_with_sequential_ones(served):
    port, _ = served
    users = [str(u) for u in range(1, 41)]
    expected = {u: predict(port, {"instances": [{"user_id": u}]})[1]["predictions"][0] for u in users}

    def one(n):
        user = users[n % len(users)]
        if n % 2:
            status, _, text = call(port, "GET", f"/recommendation?userId={user}&numRecs=10")
            return status, user, json.loads(text)["articles"]
        status, body = predict(port, {"instances": [{"user_id": user}, {"user_id": "unknown"}]})
        return status, user, body["predictions"][0]["item_ids"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(120)))
    for status, user, items in results:
        assert status == 200 and items == expected[user]["item_ids"]


def test_the_server_loads_the_saved_model_without_wals2():
    code = "import sys, trainer.serve\nprint('wals2' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "False"


def exchange(port, data: bytes, timeout=15.0) -> bytes:
    """Sends raw bytes to 127.0.0.1:port and reads until the server closes (or ``timeout``)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    try:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer and close before it has read everything
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 16)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    return received


def responses(data: bytes, head_request=False) -> list[tuple[int, dict, bytes]]:
    """The (status, headers, body) of each HTTP response in ``data``, in order."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"a truncated response: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        assert re.fullmatch(r"HTTP/1\.1 \d{3} .+", lines[0]), lines[0]
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        size = 0 if head_request else int(headers["content-length"])
        out.append((int(lines[0].split()[1]), headers, rest[:size]))
        data = rest[size:]
    return out


def post(body: bytes | str, path=PREDICT, headers: bytes = b"") -> bytes:
    body = body.encode() if isinstance(body, str) else body
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n".encode()
        + headers
        + b"\r\n"
        + body
    )


def get(path: str, version="HTTP/1.1", headers: bytes = b"Connection: close\r\n", method="GET") -> bytes:
    return f"{method} {path} {version}\r\nHost: x\r\n".encode() + headers + b"\r\n"


HOSTILE = {  # name: (raw request, expected status)
    "lone surrogate in a user id": (post('{"instances": [{"user_id": "\\ud800"}]}'), 400),
    "lone surrogate in a fold-in item id": (
        post('{"instances": [{"item_ids": ["\\ud800"], "ratings": [5]}]}'),
        400,
    ),
    "JSON nested 5,000 deep": (post('{"instances": ' + "[" * 5000 + "]" * 5000 + "}"), 400),
    "5,000-digit user_id": (post('{"instances": [{"user_id": ' + "1" * 5000 + "}]}"), 400),
    "5,000-digit k": (post('{"instances": [{"user_id": "1"}], "parameters": {"k": ' + "1" * 5000 + "}}"), 400),
    "400-digit integer rating": (post('{"instances": [{"item_ids": ["1"], "ratings": [' + "9" * 400 + "]}]}"), 400),
    "non-ASCII Content-Length": (
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: ".encode() + "١٢".encode() + b"\r\n\r\n{}",
        400,
    ),
    "1,000 instances x k = all items": (
        post(json.dumps({"instances": [{"user_id": str(u)} for u in range(1000)], "parameters": {"k": NUM_ITEMS}})),
        413,
    ),
    "fold-in of 1,000 rows padded to 10,000 items": (
        post(
            json.dumps(
                {
                    "instances": [{"item_ids": [str(i) for i in range(10000)], "ratings": [1] * 10000}]
                    + [{"item_ids": ["1"], "ratings": [1]}] * 999
                }
            )
        ),
        413,
    ),
    "TF Serving row format, 1,000 x k = all": (
        post(
            json.dumps({"signature_name": "recommend", "inputs": {"user_id": ["1"] * 1000, "k": NUM_ITEMS}}),
            "/v1/models/wals:predict",
        ),
        413,
    ),
    "body over --max-body-bytes": (get(PREDICT, headers=b"Content-Length: 99999999\r\n", method="POST"), 413),
    "20-digit Content-Length": (get(PREDICT, headers=b"Content-Length: 99999999999999999999\r\n", method="POST"), 413),
    "negative Content-Length": (get(PREDICT, headers=b"Content-Length: -1\r\n", method="POST"), 400),
    "chunked empty body": (
        get(PREDICT, headers=b"Transfer-Encoding: chunked\r\nConnection: close\r\n", method="POST") + b"0\r\n\r\n",
        400,
    ),
    "chunked body over --max-body-bytes": (
        get(PREDICT, headers=b"Transfer-Encoding: chunked\r\nConnection: close\r\n", method="POST")
        + b"".join(b"%x\r\n%s\r\n" % (1 << 20, b"x" * (1 << 20)) for _ in range(5)),
        413,
    ),
    "POST without Content-Length": (get(PREDICT, method="POST"), 400),
    "unknown method": (get(HEALTH, method="FOO"), 405),
    "HTTP/2.0": (get("/health", version="HTTP/2.0"), 505),
    "HTTP/1.x garbage version": (get("/health", version="HTTP/1.x"), 400),
    "binary request line": (b"\x00\xff\xfe garbage\r\n\r\n", 400),
    "absolute-form target": (get("http://example.com/health"), 404),
    "bare LF hiding a Content-Length": (
        f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nX-A: 1\nContent-Length: 40\r\n\r\n".encode()
        + b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    "CR in a header value": (get("/health", headers=b"X-A: 1\rContent-Length: 5\r\n"), 400),
    "NUL in a header value": (get("/health", headers=b"X-A: 1\x00b\r\n"), 400),
    "bare LF ending the head": (b"GET /health HTTP/1.1\nHost: x\n\n", 400),
    "space before a header colon": (get("/health", headers=b"Host : x\r\n"), 400),
    "100 KB header": (get("/health", headers=b"X: " + b"a" * 100_000 + b"\r\n"), 431),
    "stalled body": (get(PREDICT, headers=b"Content-Length: 100\r\n", method="POST") + b'{"inst', 408),
    "request head never finished": (b"GET /health HTTP/1.1\r\nHost: x\r\n", 408),
    "invalid UTF-8 in the query": (get("/recommendation?userId=%FF"), 400),
    "unknown route": (get("/nowhere"), 404),
    "TF Serving route, unknown model": (get("/v1/models/other"), 404),
}


def hostile_round(port) -> list[tuple[str, int, dict, bytes]]:
    """Each HOSTILE request on its own connection, 8 at a time: (name, status, headers, body) of its answers."""

    def one(name):
        got = responses(exchange(port, HOSTILE[name][0]))
        assert len(got) == 1, (name, got)
        return (name, *got[0])

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, HOSTILE))


def test_hostile_requests_each_get_an_http_status_and_memory_stays_bounded(server):
    hostile_round(server.port)  # the first round allocates what a server keeps (pools, caches)
    rss_before = server.proc_status("VmRSS")
    for _ in range(3):
        for name, status, headers, body in hostile_round(server.port):
            assert status == HOSTILE[name][1], (name, status, body)
            assert headers["content-type"] == "application/json", name
            assert json.loads(body)["error"], name
            assert headers.get("connection") == "close", (name, headers)
    rss_after = server.proc_status("VmRSS")
    assert call(server.port, "GET", HEALTH)[0] == 200
    if rss_before is not None:  # before the limits, one "1,000 x k = all" request added 1.8 GB
        assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)


def test_413_names_the_limit_and_its_flag(server):
    ((status, _, body),) = responses(exchange(server.port, HOSTILE["1,000 instances x k = all items"][0]))
    assert status == 413
    assert json.loads(body)["error"] == (
        f"instances x k should be at most 100000 (--max-results). Received: 1000 x {NUM_ITEMS} = {1000 * NUM_ITEMS}"
    )


def test_random_mutations_of_valid_requests_all_get_a_status(server):
    rng = np.random.default_rng(0)
    valid = [
        post(json.dumps({"instances": [{"user_id": "1"}, {"item_ids": ["1", "50"], "ratings": [5, 4]}]})),
        post(json.dumps({"instances": ["1", "196"]}), "/v1/models/wals:predict"),
        get("/recommendation?userId=1&numRecs=3"),
    ]
    cases = []
    for n in range(120):
        data = bytearray(valid[n % len(valid)])
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        cases.append(bytes(data))

    def one(data):
        return [status for status, _, _ in responses(exchange(server.port, data, timeout=20))]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, cases))
    for data, statuses in zip(cases, answers):
        assert statuses and all(s < 500 or s in (501, 505) for s in statuses), (data, statuses)
    assert call(server.port, "GET", HEALTH)[0] == 200


def test_conflicting_content_lengths_get_400_and_the_rest_never_runs(server):
    smuggled = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n".encode()
    got = responses(exchange(server.port, smuggled + b"{}GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert [status for status, _, _ in got] == [400]
    assert "conflicting content-length" in json.loads(got[0][2])["error"].lower()


def test_http_1_0_requests_are_answered_and_closed(server):
    # h11 keeps no HTTP/1.0 connection alive: `ab -k` gets its answer and opens the next connection.
    for request in (f"GET {HEALTH} HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", f"GET {HEALTH} HTTP/1.0\r\n\r\n"):
        ((status, headers, body),) = responses(exchange(server.port, request.encode(), timeout=10))
        assert status == 200 and headers["connection"] == "close" and json.loads(body)["status"] == "ok"


def test_expect_100_continue_is_answered_before_the_body_is_sent(server):
    body = json.dumps({"instances": [{"user_id": "1"}]}).encode()
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(4096)  # the body is not sent yet: only the interim answer can come
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        sock.sendall(body)
        data = interim.partition(b"\r\n\r\n")[2]
        while chunk := sock.recv(1 << 16):
            data += chunk
    finally:
        sock.close()
    ((status, _, answer),) = responses(data)
    assert status == 200 and json.loads(answer)["predictions"][0]["known_user"]
    # A body over --max-body-bytes is refused at once, without a 100 (the client never sends it).
    big = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {64 << 20}\r\nExpect: 100-continue\r\n\r\n"
    ((status, headers, answer),) = responses(exchange(server.port, big.encode(), timeout=5))
    assert status == 413 and headers["connection"] == "close" and "--max-body-bytes" in json.loads(answer)["error"]


def scrape(port) -> dict[tuple[str, tuple], float]:
    """/metrics parsed by prometheus_client's own parser: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, kind, text = call(port, "GET", "/metrics")
    assert status == 200 and kind.startswith("text/plain"), kind
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_each_route_and_status_and_the_access_log_has_a_line_per_request(server):
    time.sleep(0.2)  # the access lines of earlier requests are out
    start = len(server.log)
    before = scrape(server.port)
    for _ in range(3):
        assert predict(server.port, {"instances": [{"user_id": "1"}]})[0] == 200
    assert predict(server.port, {"instances": []})[0] == 400
    assert call(server.port, "GET", "/v1/models/wals/metadata")[0] == 200
    assert call(server.port, "GET", "/nowhere")[0] == 404
    after = scrape(server.port)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("wals2_requests_total", route="predict", status="200") == 3
    assert delta("wals2_requests_total", route="predict", status="400") == 1
    assert delta("wals2_requests_total", route="tf_serving_metadata", status="200") == 1
    assert delta("wals2_requests_total", route="unmatched", status="404") == 1
    assert delta("wals2_request_duration_seconds_count", route="predict") == 4
    assert delta("wals2_request_duration_seconds_bucket", route="predict", le="+Inf") == 4
    assert 0 < delta("wals2_request_duration_seconds_sum", route="predict") < 60
    assert after[("wals2_served_model_version", ())] == 1
    assert after[("wals2_requests_in_flight", ())] == 1  # the scrape itself
    deadline = time.monotonic() + 5
    pattern = re.compile(r"INFO serving\.access: (\w+) '([^']*)' (\d{3}) ([0-9.]+) ms route=(\w+)$")
    while True:
        lines = [m.groups() for line in server.log[start:] if (m := pattern.search(line.rstrip("\n")))]
        if len(lines) >= 8 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(method, path, status, route) for method, path, status, _, route in lines] == [
        ("GET", "/metrics", "200", "metrics"),
        *[("POST", PREDICT, "200", "predict")] * 3,
        ("POST", PREDICT, "400", "predict"),
        ("GET", "/v1/models/wals/metadata", "200", "tf_serving_metadata"),
        ("GET", "/nowhere", "404", "unmatched"),
        ("GET", "/metrics", "200", "metrics"),
    ]
    assert all(0 < float(ms) < 60_000 for _, _, _, ms, _ in lines)


def test_head_gets_headers_without_a_body(server):
    _, _, text = call(server.port, "GET", HEALTH)
    raw = exchange(server.port, get(HEALTH, method="HEAD"))
    ((status, headers, body),) = responses(raw, head_request=True)
    assert status == 200 and raw.endswith(b"\r\n\r\n") and body == b""
    assert int(headers["content-length"]) == len(text.encode())
    ((status, _, body),) = responses(exchange(server.port, get(PREDICT, method="HEAD")), head_request=True)
    assert status == 405 and body == b""


def test_each_client_reset_logs_one_line_at_most(server):
    body = json.dumps({"instances": [{"user_id": str(u)} for u in range(1, 200)], "parameters": {"k": 500}})
    start = len(server.log)
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(post(body))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        sock.close()
    assert call(server.port, "GET", HEALTH)[0] == 200
    time.sleep(0.5)
    new = server.log[start:]
    assert len(new) <= 20 and not any("Traceback" in line for line in new), "".join(new)


def test_slow_and_surplus_connections_are_bounded(server):
    threads_before = server.proc_status("Threads")
    socks = []
    try:
        for _ in range(100):  # more than --max-connections 64, each sending half a request head
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        if threads_before is not None:  # no thread per connection (the batcher thread may have ended meanwhile)
            assert server.proc_status("Threads") <= threads_before
        statuses = []
        for sock in socks:  # --header-timeout 1: every one is answered (408, or 503 beyond the cap) and closed
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            statuses.append(responses(data)[0][0])
    finally:
        for sock in socks:
            sock.close()
    assert set(statuses) <= {408, 503} and statuses.count(408) <= 64 and statuses.count(503) >= 36, statuses
    deadline = time.monotonic() + 10
    while call(server.port, "GET", HEALTH)[0] != 200:  # the slots free as the server sees the closes
        assert time.monotonic() < deadline, "the server did not free its connection slots"
        time.sleep(0.1)


class TFServingClient:
    """What a client written for TF Serving's REST API sends: POST /v1/models/<name>[/versions/<v>]:predict."""

    def __init__(self, port, model="wals", version=None):
        self.port = port
        self.path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "")

    def predict(self, **request):
        status, kind, text = call(self.port, "POST", self.path + ":predict", request)
        assert kind == "application/json"
        return status, json.loads(text)


def signature(module, name, **inputs):
    """The in-process ServingModule's answer (the oracle), as JSON-like lists."""
    fn = getattr(module, "serve" if name == "serving_default" else name)
    out = fn(**{key: tf.constant(value) for key, value in inputs.items()})
    return {key: value.numpy().tolist() for key, value in out.items()}


def assert_rows_match(predictions, expected):
    """Row-format predictions (one object per row) against column-wise expected outputs."""
    assert len(predictions) == len(next(iter(expected.values())))
    for b, row in enumerate(predictions):
        assert set(row) == set(expected)
        for key, want in expected.items():
            want = want[b]
            if key == "item_ids":
                assert row[key] == [w.decode() for w in want]
            elif key == "scores":
                np.testing.assert_allclose(row[key], want, rtol=1e-6)
            else:
                assert row[key] == want


def test_tf_serving_row_format_with_bare_strings_and_objects(served, exported):
    port, _ = served
    _, _, module = exported
    client = TFServingClient(port)
    users = ["196", "1", "nobody"]
    expected = signature(module, "serving_default", user_id=users)
    status, body = client.predict(instances=users)
    assert status == 200 and set(body) == {"predictions"}
    assert_rows_match(body["predictions"], expected)
    assert [row["known_user"] for row in body["predictions"]] == [True, True, False]
    status, objects = client.predict(instances=[{"user_id": u} for u in users], signature_name="serving_default")
    assert status == 200 and objects == body
    status, b64 = client.predict(instances=[{"b64": base64.b64encode(u.encode()).decode()} for u in users])
    assert status == 200 and b64 == body
    status, versioned = TFServingClient(port, version="1").predict(instances=users)
    assert status == 200 and versioned == body


def test_tf_serving_columnar_format_and_the_recommend_signature(served, exported):
    port, _ = served
    _, _, module = exported
    client = TFServingClient(port)
    status, body = client.predict(inputs=["1", "2"])
    expected = signature(module, "serving_default", user_id=["1", "2"])
    assert status == 200 and set(body) == {"outputs"}
    assert body["outputs"]["item_ids"] == [[i.decode() for i in row] for row in expected["item_ids"]]
    np.testing.assert_allclose(body["outputs"]["scores"], expected["scores"], rtol=1e-6)
    status, named = client.predict(inputs={"user_id": ["1", "2"]})
    assert status == 200 and named == body
    # recommend's k is a scalar: the columnar format carries it, the row format cannot.
    status, body = client.predict(signature_name="recommend", inputs={"user_id": ["1", "610"], "k": 3})
    expected = signature(module, "recommend", user_id=["1", "610"], k=3)
    assert status == 200 and np.array(body["outputs"]["item_ids"]).shape == (2, 3)
    assert body["outputs"]["item_ids"] == [[i.decode() for i in row] for row in expected["item_ids"]]
    status, body = client.predict(signature_name="recommend", instances=[{"user_id": "1", "k": 3}])
    assert status == 400 and "scalar input 'k'" in body["error"] and '"inputs"' in body["error"]


def test_tf_serving_score_and_fold_in_signatures(served, exported):
    port, _ = served
    _, _, module = exported
    client = TFServingClient(port)
    pairs = [{"user_id": "1", "item_id": "50"}, {"user_id": "1", "item_id": "no-item"}]
    status, body = client.predict(signature_name="score", instances=pairs)
    expected = signature(module, "score", user_id=["1", "1"], item_id=["50", "no-item"])
    assert status == 200
    assert [row["known_item"] for row in body["predictions"]] == [True, False]
    np.testing.assert_allclose([row["scores"] for row in body["predictions"]], expected["scores"], rtol=1e-6)
    rows = [{"item_ids": ["1", "50", "260"], "ratings": [5, 4, 1]}, {"item_ids": ["1", "", ""], "ratings": [3, 0, 0]}]
    status, body = client.predict(signature_name="fold_in_recommend", instances=rows)
    expected = signature(
        module,
        "fold_in_recommend",
        item_ids=[r["item_ids"] for r in rows],
        ratings=np.array([r["ratings"] for r in rows], np.float32),
    )
    assert status == 200
    assert_rows_match(body["predictions"], expected)
    assert [row["num_known_items"] for row in body["predictions"]] == [3, 1]


def test_tf_serving_similar_and_candidate_signatures_in_columnar_format(served, exported):
    port, _ = served
    _, _, module = exported
    client = TFServingClient(port)
    candidates = [["1", "2", "4", "2", "no-item", ""], ["50", "260", "3", "5", "6", "7"]]
    for name, inputs in (
        ("similar_items", {"item_id": ["1", "50", "no-item"], "k": 4}),
        ("similar_users", {"user_id": ["1", "610", "nobody"], "k": 3}),
        ("recommend_from", {"user_id": ["1", "nobody"], "candidate_item_ids": candidates, "k": 5}),
    ):
        status, body = client.predict(signature_name=name, inputs=inputs)
        expected = signature(module, name, **inputs)
        assert status == 200 and set(body) == {"outputs"} and set(body["outputs"]) == set(expected), body
        for key, want in expected.items():
            if key.endswith("_ids"):
                assert body["outputs"][key] == [[i.decode() for i in row] for row in want], (name, key)
            elif key == "scores":
                np.testing.assert_allclose(body["outputs"][key], want, rtol=1e-6)
            else:
                assert body["outputs"][key] == want, (name, key)
        assert np.array(body["outputs"]["scores"]).shape == (len(next(iter(inputs.values()))), inputs["k"])
        # The row format cannot carry the scalar k; the 400 shows the columnar request.
        row = {n: v[0] for n, v in inputs.items() if n != "k"} | {"k": inputs["k"]}
        status, refused = client.predict(signature_name=name, instances=[row])
        assert (
            status == 400
            and "scalar input 'k'" in refused["error"]
            and f'"signature_name": "{name}"' in refused["error"]
        )
    status, body = client.predict(signature_name="similar_items", inputs={"item_id": ["1"], "k": 2})
    assert body["outputs"]["item_ids"][0][0] == "1" and abs(body["outputs"]["scores"][0][0] - 1) < 1e-5  # itself
    status, body = client.predict(
        signature_name="recommend_from", inputs={"user_id": ["nobody"], "candidate_item_ids": [["1"]], "k": 2}
    )
    assert body["outputs"]["item_ids"] == [["1", ""]] and body["outputs"]["scores"] == [[0.0, -math.inf]]


@pytest.mark.parametrize(
    "path, request_body, status, message",
    [
        ("/v1/models/other:predict", {"instances": ["1"]}, 404, "Servable not found for request: Latest(other)"),
        ("/v1/models/wals/versions/2:predict", {"instances": ["1"]}, 404, "Specific(wals, 2)"),
        ("/v1/models/wals:predict", {"instances": ["1"], "signature_name": "nope"}, 400, "not found in signature"),
        ("/v1/models/wals:predict", {"instances": ["1"], "inputs": ["1"]}, 400, "exactly one of"),
        ("/v1/models/wals:predict", {"instances": [["1"]]}, 400, "should have shape [None]"),
        (
            "/v1/models/wals:predict",
            {"signature_name": "score", "inputs": {"user_id": ["1", "2"], "item_id": ["50"]}},
            400,
            "The 'score' signature refused its inputs: assertion failed: [`user_id` and `item_id` should have the "
            "same length]",
        ),
        ("/v1/models/wals:predict", {"instances": [1.5]}, 400, "should be a string or an integer id"),
        ("/v1/models/wals:predict", {"instances": ["\ud800"]}, 400, "should be valid Unicode"),
        (
            "/v1/models/wals:predict",
            {
                "signature_name": "fold_in_recommend",
                "instances": [{"item_ids": ["1"], "ratings": [5]}, {"item_ids": ["1", "2"], "ratings": [5, 4]}],
            },
            400,
            "ragged",
        ),
        (
            "/v1/models/wals:predict",
            {"signature_name": "recommend", "inputs": {"user_id": ["1"], "k": 0}},
            400,
            "`inputs.k` should be an integer in [1, 9724]",
        ),
        ("/v1/models/wals:predict", {"instances": ["1"] * 1001}, 413, "at most 1000 instances"),
        (
            "/v1/models/wals:predict",
            {"signature_name": "similar_users", "inputs": {"user_id": ["1"], "k": 611}},
            400,
            "`inputs.k` should be an integer in [1, 610]. Received: 611",
        ),
        (
            "/v1/models/wals:predict",
            {"signature_name": "similar_items", "inputs": {"item_id": ["1"] * 11, "k": NUM_ITEMS}},
            413,
            "(--max-results)",
        ),
        (
            "/v1/models/wals:predict",
            {"signature_name": "recommend_from", "inputs": {"user_id": ["1"], "candidate_item_ids": ["1"], "k": 1}},
            400,
            "`inputs.candidate_item_ids` should have shape [None, None]",
        ),
        (
            "/v1/models/wals:predict",
            {
                "signature_name": "recommend_from",
                "inputs": {"user_id": ["1", "2"], "candidate_item_ids": [["1"]], "k": 1},
            },
            400,
            "`inputs.candidate_item_ids` should have one row per `user_id`. Received: 1 rows for 2 user ids",
        ),
        (
            "/v1/models/wals:predict",
            {
                "signature_name": "recommend_from",
                "inputs": {"user_id": ["1"], "candidate_item_ids": [["1"] * 100_001], "k": 1},
            },
            413,
            "(--max-candidates). Received: 1 x 100001 = 100001",
        ),
        (
            "/v1/models/wals:predict",
            {"signature_name": "recommend_from", "inputs": {"user_id": ["1"], "candidate_item_ids": [[5.5]], "k": 1}},
            400,
            "`inputs.candidate_item_ids` should be a string or an integer id",
        ),
    ],
)
def test_tf_serving_bad_requests_get_a_clear_4xx(served, path, request_body, status, message):
    port, _ = served
    got, kind, text = call(port, "POST", path, json.dumps(request_body))
    assert (got, kind) == (status, "application/json") and message in json.loads(text)["error"], text


def test_no_answer_holds_nan_and_overflowing_fold_in_ratings_get_a_400_naming_the_field(served):
    port, _ = served
    for path, body, field in (
        (PREDICT, {"instances": [{"item_ids": ["1", "50"], "ratings": [3e38, 3e38]}]}, "`instances[0].ratings`"),
        (
            "/v1/models/wals:predict",
            {"signature_name": "fold_in_recommend", "instances": [{"item_ids": ["1", "50"], "ratings": [3e38, 3e38]}]},
            "`instances[*].ratings`",
        ),
        (
            "/v1/models/wals:predict",
            {"signature_name": "fold_in_recommend", "inputs": {"item_ids": [["1"]], "ratings": [[-3e38]]}},
            "`inputs.ratings`",
        ),
    ):
        status, _, text = call(port, "POST", path, body)
        error = json.loads(text)["error"]
        assert status == 400 and error.startswith(field + " make the fold-in solve overflow float32"), text
    # Scores a strict parser reads: no NaN anywhere; -Infinity only in TF Serving's empty slots.
    status, _, text = call(port, "POST", PREDICT, {"instances": [{"item_ids": ["1"], "ratings": [1e30]}]})
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text[:200]}"))
    assert status in (200, 400) and strict


def test_tf_serving_status_and_metadata_routes(served):
    port, _ = served
    for path in ("/v1/models/wals", "/v1/models/wals/versions/1"):
        status, _, text = call(port, "GET", path)
        assert status == 200
        assert json.loads(text) == {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        }
    status, _, text = call(port, "GET", "/v1/models/wals/metadata")
    defs = json.loads(text)["metadata"]["signature_def"]["signature_def"]
    assert status == 200 and set(defs) == {
        *("serving_default", "recommend", "score", "fold_in_recommend", "recommend_from", "similar_items"),
        "similar_users",
    }
    assert (
        defs["recommend_from"]["inputs"]["candidate_item_ids"]["tensor_shape"]["dim"]
        == [{"size": "-1", "name": ""}] * 2
    )
    assert defs["recommend"]["inputs"]["k"]["tensor_shape"]["dim"] == []
    assert defs["serving_default"]["inputs"]["user_id"]["dtype"] == "DT_STRING"
    assert defs["score"]["outputs"]["scores"]["dtype"] == "DT_FLOAT"  # TF Serving's name, not DT_FLOAT32
    # A TF Serving client parses the answer into its protos unchanged.
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    answer = json.loads(text)
    parsed = get_model_metadata_pb2.SignatureDefMap()
    json_format.ParseDict(answer["metadata"]["signature_def"], parsed)
    assert parsed.signature_def["score"].outputs["scores"].dtype == 1  # DT_FLOAT
    status_answer = json.loads(call(port, "GET", "/v1/models/wals")[2])
    json_format.ParseDict(status_answer, get_model_status_pb2.GetModelStatusResponse())
    assert call(port, "POST", "/v1/models/wals", "{}")[0] == 405
    assert call(port, "GET", "/v1/models/wals:predict")[0] == 405


def test_a_model_exported_before_the_similar_signatures_still_serves_and_names_what_it_lacks(exported, tmp_path):
    from serving import tf_serving
    from serving.limits import BadRequest, WorkLimits
    from serving.model import Recommender
    from serving.requests import parse_predict, parse_similar, parse_tf1

    _, _, module = exported
    old = {
        n: fn
        for n, fn in module.signatures().items()
        if n in ("serving_default", "recommend", "score", "fold_in_recommend")
    }
    tf.saved_model.save(module, str(tmp_path / "old"), signatures=old)
    recommender, limits = Recommender(str(tmp_path / "old")), WorkLimits()
    (answer,) = parse_predict(b'{"instances": [{"user_id": "1"}]}', recommender, limits)
    assert answer["known_user"] and len(answer["item_ids"]) == 10
    for body, lacking in (
        (b'{"instances": [{"similar_to_item": "1"}]}', "similar_items"),
        (b'{"instances": [{"similar_to_user": "1"}]}', "similar_users"),
        (b'{"instances": [{"user_id": "1", "candidate_item_ids": ["2"]}]}', "recommend_from"),
    ):
        with pytest.raises(BadRequest, match=f"The served model has no '{lacking}' signature") as err:
            parse_predict(body, recommender, limits)
        assert err.value.status == 400
    with pytest.raises(BadRequest, match="has no 'similar_users' signature"):
        parse_similar("/similar_users", "userId=1", recommender, limits)
    with pytest.raises(BadRequest, match="has no 'recommend_from' signature"):
        parse_tf1("userId=1&candidateItemIds=2", recommender, limits)
    request = b'{"signature_name": "similar_items", "inputs": {"item_id": ["1"], "k": 2}}'
    with pytest.raises(BadRequest, match='Serving signature name: "similar_items" not found in signature def'):
        tf_serving.predict(request, recommender, limits)


@pytest.mark.slow
def test_loadtest_smoke_run_reports_its_figures(exported):
    path, _, _ = exported
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadtest", "--model-dir", str(path), "--clients", "2", "4"]
        + ["--requests", "40", "--duration", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [(r["route"], r["clients"]) for r in rows] == [("vertex", 2), ("tf1", 2), ("vertex", 4), ("tf1", 4)]
    for r in rows:
        assert r["requests"] == 40 and r["errors"] == 0 and 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["requests_per_s"] > 0


@pytest.mark.slow
def test_a_new_version_is_swapped_in_under_load_and_a_broken_one_skipped(exported, tmp_path):
    path, train, module = exported
    base = tmp_path / "models" / "wals"
    shutil.copytree(path, base / "1")
    # Version 2: another model, whose answer for user 1 differs from version 1's.
    other = WALSModel(train.num_users, train.num_items, latent_factors=3, seed=7)
    other.compile(jit_compile=False)
    other.fit(train, epochs=1, verbose=0)
    answers = {}
    for version, served_module in (("1", module), ("2", None)):
        if served_module is None:
            staging = tmp_path / "staging-2"
            served_module = export_saved_model(other, str(staging), top_k=10)
        items = served_module.serve(tf.constant(["1"]))["item_ids"].numpy()[0]
        answers[version] = [i.decode() for i in items]
    assert answers["1"] != answers["2"]
    running = Server(base, "--poll-interval", "0.5", "--workers", "2")
    try:
        assert json.loads(call(running.port, "GET", HEALTH)[2])["model_version"] == "1"
        log: list[tuple[float, int, str | None]] = []  # (time, status, version whose answer it was)
        stop = threading.Event()

        def client():
            connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
            body = json.dumps({"instances": [{"user_id": "1"}]})
            for _ in range(20000):  # bounded in count and, by `stop`, in time
                if stop.is_set():
                    break
                try:
                    connection.request("POST", PREDICT, body=body, headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    data = json.loads(response.read())
                    status = response.status
                except (OSError, http.client.HTTPException, ValueError):
                    log.append((time.monotonic(), -1, None))
                    connection.close()
                    continue
                items = data["predictions"][0]["item_ids"] if status == 200 else None
                which = next((v for v, want in answers.items() if items == want), None)
                log.append((time.monotonic(), status, which))
            connection.close()

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        try:
            time.sleep(1.0)
            appeared = time.monotonic()
            os.rename(staging, base / "2")  # a complete version directory appears at once
            deadline = appeared + 120
            while not any(which == "2" for _, _, which in log):
                assert time.monotonic() < deadline, "version 2 was not served within 120 s"
                time.sleep(0.05)
            first_answer = next(t for t, _, which in log if which == "2") - appeared
            during = sum(appeared <= t <= appeared + first_answer for t, _, _ in log)
            # Version 3 is broken: its saved_model.pb is not a SavedModel.
            (base / "3" / "variables").mkdir(parents=True)
            (base / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
            deadline = time.monotonic() + 60
            while not any("skipped version 3" in line for line in running.log):
                assert time.monotonic() < deadline, "version 3 was neither served nor skipped: " + "".join(running.log)
                time.sleep(0.1)
            time.sleep(1.0)  # more polls, while the load goes on
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=60)
        statuses = [status for _, status, _ in log]
        versions = [which for _, _, which in log]
        print(
            f"reload: {len(log)} requests, {len(log) - statuses.count(200)} failed; version 2 answered "
            f"{first_answer:.2f} s after its directory appeared, {during} requests answered meanwhile"
        )
        assert statuses.count(200) == len(log), [s for s in statuses if s != 200][:5]
        assert set(versions) == {"1", "2"}  # every answer is one model's, whole
        assert versions[-1] == "2" and versions.count("2") > 10
        health = json.loads(call(running.port, "GET", HEALTH)[2])
        assert health["model_version"] == "2"
        status = json.loads(call(running.port, "GET", "/v1/models/wals")[2])["model_version_status"][0]
        assert (status["version"], status["state"]) == ("2", "AVAILABLE")
        assert call(running.port, "GET", "/v1/models/wals/versions/1")[0] == 404
    finally:
        running.stop()


def test_the_batcher_joins_concurrent_calls_per_k_and_gives_each_its_rows():
    from serving.model import _Batcher

    calls = []
    first = threading.Event()

    def run(ids, k):
        calls.append((list(ids), k))
        if len(calls) == 1:
            first.wait(timeout=10)  # holds the first call while the others queue
        if "boom" in ids:
            raise ValueError("boom")
        return {"ids": np.array(ids, dtype=object), "k": np.array([k] * len(ids), dtype=object)}

    batcher = _Batcher(run, max_users=5)
    head = batcher.submit(["a"], None)
    deadline = time.monotonic() + 10
    while not calls:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    queued = [batcher.submit([f"u{n}", f"v{n}"], n % 2 or None) for n in range(4)]
    failing = batcher.submit(["boom"], 7)
    first.set()
    assert head.result(timeout=10)["ids"].tolist() == ["a"]
    for n, future in enumerate(queued):
        out = future.result(timeout=10)
        assert out["ids"].tolist() == [f"u{n}", f"v{n}"] and out["k"].tolist() == [n % 2 or None] * 2
    with pytest.raises(ValueError, match="boom"):
        failing.result(timeout=10)
    # The queue (9 users) is taken in arrival order, at most 5 users at a time, one call per k in each take.
    assert calls == [
        (["a"], None),
        (["u0", "v0"], None),
        (["u1", "v1"], 1),  # first take: 4 users (the next request would make 6)
        (["u2", "v2"], None),
        (["u3", "v3"], 1),
        (["boom"], 7),  # second take: 5 users
    ]


CURL = re.compile(r"curl -s '?localhost:8080(/[^\s']*)'?(?:\s+-d\s+'([^']*)')?")


def readme_requests() -> list[tuple[str, str | None]]:
    """(path, body or None) of each ``curl`` in the README's "### HTTP server" code blocks (continuations joined)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    text = readme.split("### HTTP server", 1)[1].split("#### Model versions", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    return [m.groups() for block in blocks for m in CURL.finditer(block.replace("\\\n", " "))]


def test_the_readme_serving_requests_are_answered(served):
    port, _ = served
    requests = readme_requests()
    bodies = " ".join(body or "" for _, body in requests)
    for name in ("similar_items", "similar_users", "recommend_from", "similar_to_item", "candidate_item_ids"):
        assert name in bodies, name  # the new signatures and instances have an example
    assert len(requests) >= 18, requests
    routes = {"/predict": PREDICT, "/health": HEALTH}
    for path, body in requests:
        route, _, query = path.partition("?")
        target = routes.get(route, route) + (f"?{query}" if query else "")
        status, kind, text = call(port, "POST" if body else "GET", target, body)
        assert (status, kind) == (200, "application/json"), (path, body, text)
        answer = json.loads(text)
        for key in ("predictions", "outputs"):
            rows = answer.get(key, [])
            assert "error" not in rows and all("error" not in row for row in rows if isinstance(row, dict)), text


def test_the_readme_limits_table_matches_the_flags():
    from trainer.serve import build_parser

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("#### Limits", 1)[1].split("\n\n")[2]
    rows = re.findall(r"^\| `(--[a-z-]+)` \| ([0-9.]+)( s)? \|", table, re.MULTILINE)
    defaults = {action.option_strings[0]: action.default for action in build_parser()._actions if action.option_strings}
    limit_flags = {"--max-instances", "--max-results", "--max-fold-in-items", "--max-body-bytes", "--max-connections"}
    limit_flags |= {"--max-candidates"}
    limit_flags |= {"--header-timeout", "--body-timeout", "--idle-timeout", "--workers", "--drain-timeout"}
    assert {flag for flag, _, _ in rows} == limit_flags
    for flag, value, _ in rows:
        assert float(value) == defaults[flag], flag


def test_versioned_models_skip_broken_versions_and_retry_them_only_when_their_files_change(tmp_path):
    from serving.versions import VersionedModels, is_versioned

    loads = []

    class Loaded:
        def __init__(self, path, version):
            loads.append(version)
            if (pathlib.Path(path) / "saved_model.pb").read_bytes() == b"broken":
                raise ValueError("cannot parse saved_model.pb")
            self.version = version

    def write(version, content):
        (tmp_path / version).mkdir(exist_ok=True)
        (tmp_path / version / "saved_model.pb").write_bytes(content)

    write("1", b"good")
    write("2", b"broken")
    (tmp_path / "notes").mkdir()  # not a version
    (tmp_path / "7").mkdir()  # no saved_model.pb: not a version yet
    assert is_versioned(str(tmp_path)) and not is_versioned(str(tmp_path / "1"))
    models = VersionedModels(str(tmp_path), load=Loaded)
    assert models.current.version == "1" and loads == ["2", "1"]  # the highest that loads
    assert not models.poll() and loads == ["2", "1"]  # 2 unchanged: not tried again
    write("2", b"fixed now")
    assert models.poll() and models.current.version == "2" and loads[-1] == "2"
    write("3", b"broken")
    assert not models.poll() and models.current.version == "2"
    (tmp_path / "1").rename(tmp_path / "0")  # not a version number; lower versions are never loaded anyway
    write("1", b"good")
    assert not models.poll() and loads.count("1") == 1
    with pytest.raises(ValueError, match="no version under"):
        VersionedModels(str(tmp_path / "3"), load=Loaded)


def test_zero_padded_version_directories_are_their_numbers_as_in_tf_serving(tmp_path):
    from serving.versions import VersionedModels

    class Loaded:
        def __init__(self, path, version):
            assert (pathlib.Path(path) / "saved_model.pb").exists(), path
            self.version, self.path = version, path

    for name in ("00001", "0003"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"model")
    models = VersionedModels(str(tmp_path), load=Loaded)
    assert models.current.version == "3" and models.current.path.endswith("/0003")
    (tmp_path / "004").mkdir()
    (tmp_path / "004" / "saved_model.pb").write_bytes(b"model")
    assert models.poll() and models.version == 4 and models.current.path.endswith("/004")


def test_a_replaced_model_is_freed_at_the_swap(tmp_path):
    import gc
    import weakref

    from serving.versions import VersionedModels

    class Loaded:  # a loaded model holds reference cycles, as a SavedModel's objects do
        def __init__(self, path, version):
            self.version = version
            self.cycle = [self]

    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"one")
    models = VersionedModels(str(tmp_path), load=Loaded)
    first = weakref.ref(models.current)
    gc.disable()  # only the swap itself may collect
    try:
        (tmp_path / "2").mkdir()
        (tmp_path / "2" / "saved_model.pb").write_bytes(b"two")
        assert models.poll() and models.current.version == "2"
        assert first() is None  # freed by the swap, not left for a later collection
    finally:
        gc.enable()


@pytest.mark.slow
def test_sigterm_drains_the_requests_in_flight_and_exits_0(exported):
    path, _, _ = exported
    running = Server(path, "--workers", "2", "--drain-timeout", "20")
    heavy = json.dumps({"instances": [{"user_id": str(u % 600 + 1)} for u in range(200)], "parameters": {"k": 100}})
    sent = threading.Barrier(17)
    answered = []

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=60)
        try:
            connection.request("POST", PREDICT, body=heavy, headers={"Content-Type": "application/json"})
            sent.wait(timeout=30)
            response = connection.getresponse()
            answer = response.status, len(json.loads(response.read())["predictions"])
            answered.append(time.monotonic())
            return answer
        finally:
            connection.close()

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(client) for _ in range(16)]
            sent.wait(timeout=30)  # every request is sent
            time.sleep(0.5)  # and read by the server, which answers 2 at a time
            signalled = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            answers = [future.result(timeout=60) for future in futures]
        code = running.process.wait(timeout=30)
        took = time.monotonic() - signalled
    finally:
        if running.process.poll() is None:
            running.stop()
    last = max(answered) - signalled
    done = sum(a == (200, 200) for a in answers)
    print(f"SIGTERM under load: {done} of 16 answered (the last {last:.1f} s after it), exit {code} in {took:.1f} s")
    assert answers == [(200, 200)] * 16
    assert code == 0 and took < 20
    assert any("draining" in line for line in running.log) and not any("Traceback" in line for line in running.log)


@pytest.mark.slow
def test_idle_connections_cannot_lock_out_health(exported):
    path, _, _ = exported
    running = Server(path, "--max-connections", "64", "--idle-timeout", "60")
    idle = []
    try:
        for _ in range(256):  # connections that never send a byte
            idle.append(socket.create_connection(("127.0.0.1", running.port), timeout=10))
        time.sleep(1.5)  # they are idle for longer than serving.server.MIN_IDLE_S
        took = []
        for _ in range(5):
            started = time.monotonic()
            status, _, text = call(running.port, "GET", HEALTH)
            took.append(time.monotonic() - started)
            assert status == 200 and json.loads(text)["status"] == "ok"
        print(f"/health with 256 idle connections open: {max(took) * 1000:.1f} ms at most")
        assert max(took) < 2.0, took
        # Busy connections are not closed for room: 64 half-sent heads hold every slot, the next one gets a 503.
        for sock in idle:
            sock.close()
        idle = []
        time.sleep(0.5)
        for _ in range(64):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            idle.append(sock)
        time.sleep(0.5)
        ((status, _, body),) = responses(exchange(running.port, get(HEALTH), timeout=10))
        assert status == 503 and "--max-connections" in json.loads(body)["error"]
    finally:
        for sock in idle:
            sock.close()
        running.stop()


def test_requests_are_sorted_into_lanes_by_their_cost():
    from serving.app import LIGHT_BODY_BYTES, _lane, _predict_cost, _query_cost, _tf_serving_cost

    class Model:
        top_k = 10

    one = {"instances": [{"user_id": "1"}]}
    assert _predict_cost(one, Model()) == 10 and _lane(10) == "light"
    wide = {"instances": [{"user_id": "1"}] * 20, "parameters": {"k": 5000}}  # a small body, 100000 slots
    assert _predict_cost(wide, Model()) == 100_000 and _lane(100_000) == "heavy"
    fold_in = {"instances": [{"item_ids": ["1"] * 3000, "ratings": [1] * 3000}]}
    assert _lane(_predict_cost(fold_in, Model())) == "heavy"
    assert _lane(1, LIGHT_BODY_BYTES + 1) == "heavy"
    assert _lane(_query_cost("userId=1&numRecs=5")) == "light"
    assert _lane(_query_cost("userId=1&numRecs=9000")) == "heavy"
    assert _lane(_tf_serving_cost({"instances": ["1", "2"]}, Model())) == "light"
    assert _lane(_tf_serving_cost({"inputs": {"user_id": ["1"] * 100, "k": 500}}, Model())) == "heavy"


def test_a_large_batch_is_called_in_chunks_with_the_same_answer(exported):
    from serving import model as serving_model

    path, _, _ = exported
    recommender = serving_model.Recommender(str(path))
    users = np.array([str(u % 700) for u in range(300)], dtype=object)  # 300 rows: 5 chunks of at most 64
    whole = recommender._call("recommend", {"user_id": users, "k": np.int32(7)})
    calls = []
    original = recommender._call
    recommender._call = lambda name, inputs: calls.append(len(inputs["user_id"])) or original(name, inputs)
    chunked = recommender.call("recommend", {"user_id": users, "k": np.int32(7)})
    assert calls == [64, 64, 64, 64, 44]
    assert set(chunked) == set(whole)
    for name in whole:  # scores may differ in their last float32 bit: the matmul's order depends on the batch
        if name == "scores":
            np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-6)
        else:
            np.testing.assert_array_equal(chunked[name], whole[name])


@pytest.mark.slow
def test_heavy_requests_do_not_starve_a_one_user_request(exported):
    path, _, _ = exported
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.fairness", "--model-dir", str(path), "--heavy-clients", "16"]
        + ["--duration", "8", "--server-args=--no-access-log"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    print("fairness:", row)
    assert row["heavy_errors"] == 0 and row["heavy_requests_per_s"] > 0
    # The server before the lanes answered a one-user request in 3.2 s under this load (a FIFO pool).
    assert row["one_user_under_load"]["n"] >= 50 and row["one_user_under_load"]["p50_ms"] < 500, row


def test_tf_serving_grpc_clients_work_with_the_packages_own_stubs(server, exported):
    import grpc
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    _, _, module = exported
    assert server.grpc_port
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)

    def request(signature=None, name="wals", version=None, **inputs):
        out = predict_pb2.PredictRequest()
        out.model_spec.name = name
        if version is not None:
            out.model_spec.version.value = version
        if signature:
            out.model_spec.signature_name = signature
        for key, value in inputs.items():
            out.inputs[key].CopyFrom(value)
        return out

    answer = predictions.Predict(request(user_id=tf.make_tensor_proto(["1", "999999"])), timeout=30)
    want = signature(module, "serving_default", user_id=["1", "999999"])
    assert answer.model_spec.version.value == 1 and answer.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(answer.outputs["item_ids"]).tolist() == want["item_ids"]
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["scores"]), want["scores"], rtol=1e-6)
    assert tf.make_ndarray(answer.outputs["known_user"]).tolist() == [True, False]
    answer = predictions.Predict(
        request("recommend", version=1, user_id=tf.make_tensor_proto(["1"]), k=tf.make_tensor_proto(3, tf.int32))
    )
    assert tf.make_ndarray(answer.outputs["item_ids"]).tolist() == [want["item_ids"][0][:3]]

    def refused(call, *args):
        with pytest.raises(grpc.RpcError) as err:
            call(*args, timeout=30)
        return err.value.code(), err.value.details()

    overflow = request(
        "fold_in_recommend",
        item_ids=tf.make_tensor_proto([["1", "50"]]),
        ratings=tf.make_tensor_proto(np.full((1, 2), 3e38, np.float32)),
    )
    code, details = refused(predictions.Predict, overflow)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(
        "`inputs.ratings` make the fold-in solve overflow float32"
    )
    code, details = refused(predictions.Predict, request(name="other", user_id=tf.make_tensor_proto(["1"])))
    assert code == grpc.StatusCode.NOT_FOUND and details == "Servable not found for request: Latest(other)"
    code, _ = refused(predictions.Predict, request(version=7, user_id=tf.make_tensor_proto(["1"])))
    assert code == grpc.StatusCode.NOT_FOUND
    code, details = refused(predictions.Predict, request(user_id=tf.make_tensor_proto([1, 2])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "`inputs.user_id` should have dtype string" in details
    code, details = refused(predictions.Predict, request(user_id=tf.make_tensor_proto(["1"] * 1001)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "(--max-instances)" in details
    code, details = refused(predictions.Predict, request("nope", user_id=tf.make_tensor_proto(["1"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not found in signature def" in details

    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_request.model_spec.name = "wals"
    metadata_request.metadata_field.append("signature_def")
    metadata = predictions.GetModelMetadata(metadata_request, timeout=30)
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(defs)
    assert {"serving_default", "recommend", "fold_in_recommend", "similar_items"} <= set(defs.signature_def)
    assert defs.signature_def["serving_default"].outputs["scores"].dtype == tf.float32.as_datatype_enum
    assert metadata.model_spec.version.value == 1

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "wals"
    (status,) = models.GetModelStatus(status_request, timeout=30).model_version_status
    assert (status.version, status.state) == (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    channel.close()


def test_versioned_models_follow_the_content_of_the_versions(tmp_path, caplog):
    from serving.versions import VersionedModels

    loads = []

    class Loaded:
        def __init__(self, path, version):
            content = (pathlib.Path(path) / "saved_model.pb").read_bytes()
            loads.append((version, content))
            if content.startswith(b"broken"):
                raise ValueError("cannot parse saved_model.pb")
            self.version, self.content = version, content
            self.top_k = int(content.split(b"k=")[1]) if b"k=" in content else 10

    def write(version, content):
        (tmp_path / version).mkdir(exist_ok=True)
        (tmp_path / version / "saved_model.pb").write_bytes(content)

    write("1", b"model-a k=10")
    models = VersionedModels(str(tmp_path), load=Loaded)
    assert models.current.content == b"model-a k=10"
    write("2", b"broken-a k=10")
    assert not models.poll() and not models.poll() and loads.count(("2", b"broken-a k=10")) == 1
    write("2", b"broken-b k=10")  # a same-size change is still a change: tried again, fails again
    assert not models.poll() and loads[-1] == ("2", b"broken-b k=10")
    write("2", b"model-b k=10")  # a same-size repair is loaded
    assert models.poll() and (models.current.version, models.current.content) == ("2", b"model-b k=10")
    # The served version replaced under its number: the new content is served.
    write("2", b"model-c k=10")
    assert models.poll() and (models.current.version, models.current.content) == ("2", b"model-c k=10")
    assert not models.poll()  # and loaded once
    # A version whose top_k is smaller is refused with a log line; the old one keeps serving.
    caplog.clear()
    with caplog.at_level("ERROR", logger="serving.versions"):
        write("3", b"model-d k=5")
        assert not models.poll() and models.current.content == b"model-c k=10"
    assert any("refused version 3" in r.message and "top_k 5 is smaller" in r.message for r in caplog.records)
    n = len(loads)
    assert not models.poll() and len(loads) == n  # not tried again until its content changes
    write("3", b"model-d k=20")
    assert models.poll() and models.current.version == "3"
    # The served version removed: the highest remaining one is served, and reported.
    shutil.rmtree(tmp_path / "3")
    assert models.poll() and (models.current.version, models.current.content) == ("2", b"model-c k=10")
    shutil.rmtree(tmp_path / "2")
    shutil.rmtree(tmp_path / "1")
    with caplog.at_level("ERROR", logger="serving.versions"):
        assert not models.poll() and models.current.version == "2"  # nothing else loads: kept, with an error
    assert any("the served version 2 was removed" in r.message for r in caplog.records)


def test_incompatible_signatures_are_named(exported, tmp_path):
    from serving.model import Recommender
    from serving.versions import incompatibility

    path, _, module = exported
    served = Recommender(str(path))
    old = {n: fn for n, fn in module.signatures().items() if n in ("serving_default", "recommend", "fold_in_recommend")}
    tf.saved_model.save(module, str(tmp_path / "old"), signatures=old)
    fewer = Recommender(str(tmp_path / "old"))
    assert incompatibility(served, served) is None and incompatibility(fewer, served) is None
    assert "lacks the signatures" in incompatibility(served, fewer) and "similar_items" in incompatibility(
        served, fewer
    )


def test_ports_out_of_range_or_not_numbers_are_refused_before_the_model_loads(monkeypatch, capsys, tmp_path):
    from serving import cli

    missing = str(tmp_path / "no-model")  # never read: the ports are checked first
    for args, env, message in (
        (["--port", "99999"], None, "argument --port: should be a port number in [0, 65535], got '99999'"),
        (["--grpc-port", "-1"], None, "argument --grpc-port: should be a port number in [0, 65535], got '-1'"),
        ([], "abc", "$AIP_HTTP_PORT (the default of --port) should be a port number in [0, 65535], got 'abc'"),
    ):
        if env is None:
            monkeypatch.delenv("AIP_HTTP_PORT", raising=False)
        else:
            monkeypatch.setenv("AIP_HTTP_PORT", env)
        with pytest.raises(SystemExit) as exit_:
            cli.main(["--model-dir", missing, *args])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    # An explicit --port wins over a bad $AIP_HTTP_PORT: the run goes on to load the (missing) model.
    assert cli.main(["--model-dir", missing, "--port", "8081"]) == 1
    captured = capsys.readouterr()
    assert "cannot load a wals2 serving SavedModel" in captured.out + captured.err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0 and "AIP_HTTP_PORT" in capsys.readouterr().out


def test_the_reason_of_a_refused_signature_call_is_its_informative_line():
    from serving.model import _reason

    message = (
        "Graph execution error:\n\nDetected at node Assert defined at (most recent call last):\n<stack traces "
        "unavailable>\nassertion failed: [`user_id` and `item_id` should have the same length]\n\t [[{{node "
        "Assert}}]] [Op:__inference_score_1]"
    )
    assert _reason(message) == "assertion failed: [`user_id` and `item_id` should have the same length]"
    assert _reason("Graph execution error:") == "Graph execution error:" and _reason("") == "no reason given"


def test_help_answers_without_importing_tensorflow():
    probe = "import sys\nfrom trainer.serve import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    probe += "print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--max-instances" in result.stdout, result.stderr
    assert result.stdout.strip().endswith("False"), result.stdout[-200:]
