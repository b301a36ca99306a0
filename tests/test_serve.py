"""``python -m trainer.serve`` as a subprocess on a loopback port: Vertex and TF1 routes, health, bad requests."""

import http.client
import json
import os
import queue
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import ROOT

import wals2
from wals2 import WALSModel, export_saved_model

HEALTH = "/v1/models/wals"
PREDICT = "/v1/models/wals:predict"
NUM_ITEMS = 9724


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(port, train ratings) of a server over a latest-small model; the server is always terminated."""
    ratings = wals2.load_bundled()
    train, _ = ratings.split(0.1, seed=0)
    model = WALSModel(ratings.num_users, ratings.num_items, latent_factors=5)
    model.compile(jit_compile=False)
    model.fit(train, epochs=2, verbose=0)
    path = tmp_path_factory.mktemp("serve") / "model"
    export_saved_model(model, train, str(path), top_k=10)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", AIP_HEALTH_ROUTE=HEALTH, AIP_PREDICT_ROUTE=PREDICT)
    env.pop("AIP_HTTP_PORT", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "trainer.serve", "--model-dir", str(path), "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    try:
        port, seen = None, []
        while port is None:
            try:
                line = lines.get(timeout=120)
            except queue.Empty:
                pytest.fail("the server did not start within 120 s: " + "".join(seen))
            seen.append(line)
            match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else None
            assert server.poll() is None, "".join(seen)
        assert call(port, "GET", HEALTH)[0] == 200
        yield port, train
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


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
    assert call(port, "GET", "/readiness_check")[::2] == (200, "")


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


def test_tf1_recommendation_route(served):
    port, _ = served
    status, kind, text = call(port, "GET", "/recommendation?userId=1")
    assert status == 200 and kind == "application/json"
    articles = json.loads(text)["articles"]
    _, body = predict(port, {"instances": [{"user_id": "1"}]})
    assert articles == body["predictions"][0]["item_ids"][:5]  # TF1's default numRecs is 5
    status, _, text = call(port, "GET", "/recommendation?userId=1&numRecs=12")
    assert status == 200 and len(json.loads(text)["articles"]) == 12


@pytest.mark.parametrize(
    "query, message",
    [
        ("", "No User Id provided."),
        ("?numRecs=3", "No User Id provided."),
        ("?userId=abc", "User id and number of recs arguments must be integers."),
        ("?userId=1&numRecs=2.5", "User id and number of recs arguments must be integers."),
        ("?userId=999999", "User Id not found : 999999"),
        ("?userId=0", "User Id not found : 0"),
        ("?userId=1&numRecs=0", f"`numRecs` should be an integer in [1, {NUM_ITEMS}]. Received: numRecs=0"),
        ("?userId=1&numRecs=-3", f"`numRecs` should be an integer in [1, {NUM_ITEMS}]. Received: numRecs=-3"),
        ("?userId=1&numRecs=9725", f"`numRecs` should be an integer in [1, {NUM_ITEMS}]. Received: numRecs=9725"),
    ],
)
def test_tf1_bad_requests_get_tf1_messages(served, query, message):
    port, _ = served
    assert call(port, "GET", "/recommendation" + query) == (400, "text/plain; charset=utf-8", message)


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
        ({"instances": [{"user_id": "1"}] * 1001}, 413, "at most 1000 instances"),
        ({"instances": [{"user_id": "1"}], "parameters": {"k": 0}}, 400, '"parameters.k" should be an integer'),
        ({"instances": [{"user_id": "1"}], "parameters": {"k": 9725}}, 400, '"parameters.k" should be an integer'),
        ({"instances": [{"user_id": "1"}], "parameters": {"k": "5"}}, 400, '"parameters.k" should be an integer'),
        ({"instances": [{"user_id": "1"}], "parameters": {"top": 5}}, 400, '"parameters" should be an object'),
        ({"instances": [{"item_ids": ["1"], "ratings": [1, 2]}]}, 400, "lists of the same length"),
        ({"instances": [{"item_ids": [], "ratings": []}]}, 400, "should hold 1 to 10000 items"),
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
    connection.endheaders()  # no Content-Length
    assert connection.getresponse().status == 411
    connection.close()
    assert call(port, "GET", "/nowhere")[0] == 404
    assert call(port, "POST", "/nowhere", {"instances": [{"user_id": "1"}]})[0] == 404
    assert call(port, "DELETE", PREDICT)[0] == 405
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
