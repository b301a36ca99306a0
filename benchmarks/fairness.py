"""One user's latency while heavy clients load the server: can heavy requests within the limits starve cheap ones?

    python -m benchmarks.fairness --model-dir DIR [--heavy-clients 16] [--duration 20]

Starts ``python -m trainer.serve`` on a free loopback port (``--server-cwd`` runs another checkout's server), then
measures one client's single-user Vertex request (``{"instances": [{"user_id": ...}]}``, one at a time):
alone, then while ``--heavy-clients`` threads each send, in a loop, the heaviest request the default limits allow
(1000 users x k=100 = 100000 result slots, a 20 KB body). Prints one JSON line with both p50 / p99 / max in ms and
the heavy requests answered per second. Client and server share the machine: the line notes the load average.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.loadtest import PREDICT_ROUTE, start_server, stop_server  # noqa: E402

HEAVY = json.dumps({"instances": [{"user_id": str(u % 600 + 1)} for u in range(1000)], "parameters": {"k": 100}})


def one_user_latencies(port: int, seconds: float, most: int) -> list[float]:
    """Latencies (ms) of sequential single-user requests on one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    out = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and len(out) < most:
        body = json.dumps({"instances": [{"user_id": str(n % 600 + 1)}]})
        started = time.perf_counter()
        connection.request("POST", PREDICT_ROUTE, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"a one-user request got {response.status}")
        out.append((time.perf_counter() - started) * 1000)
        n += 1
        time.sleep(0.01)
    connection.close()
    return out


def heavy_load(port: int, clients: int, stop, counts) -> None:
    """``clients`` threads sending HEAVY in a loop until ``stop``; puts (answered, errors) on ``counts``."""
    done, errors = [], []

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while not stop.is_set():
            try:
                connection.request("POST", PREDICT_ROUTE, body=HEAVY, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                (done if response.status == 200 else errors).append(response.status)
            except (OSError, http.client.HTTPException) as err:
                errors.append(repr(err))
                connection.close()
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts.put((len(done), len(errors)))


def summary(latencies: list[float]) -> dict:
    values = np.array(latencies)
    return {
        "n": int(values.size),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "max_ms": round(float(values.max()), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairness", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="the SavedModel to serve")
    parser.add_argument("--heavy-clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds under load (default 20)")
    parser.add_argument("--server-cwd", default=None, help="run the server of this checkout (default this one)")
    parser.add_argument("--server-args", default="", help="extra flags of trainer.serve, as one string")
    args = parser.parse_args(argv)
    server, port = start_server(args.model_dir, args.server_args.split(), cwd=args.server_cwd)
    try:
        one_user_latencies(port, 2, 50)  # warm-up
        alone = summary(one_user_latencies(port, 5, 300))
        stop = multiprocessing.Event()
        counts = multiprocessing.Queue()
        # The heavy clients run in a process of their own, so that their reading does not slow this one's.
        heavy = multiprocessing.Process(target=heavy_load, args=(port, args.heavy_clients, stop, counts))
        heavy.start()
        time.sleep(3.0)  # the heavy load is on
        started = time.monotonic()
        loaded = summary(one_user_latencies(port, args.duration, 100000))
        took = time.monotonic() - started
        stop.set()
        done, errors = counts.get(timeout=180)
        heavy.join(timeout=60)
        row = {
            "heavy_clients": args.heavy_clients,
            "one_user_alone": alone,
            "one_user_under_load": loaded,
            "heavy_requests_per_s": round(done / (took + 3.0), 2),
            "heavy_errors": errors,
            "load_average": round(os.getloadavg()[0], 1),
        }
        print(json.dumps(row), flush=True)
    finally:
        stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
