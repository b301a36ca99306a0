"""Bounded loopback load test of ``python -m trainer.serve``: requests/s, p50/p99 latency and errors.

    python -m benchmarks.loadtest                          # trains on bundled latest-small, then both routes
    python -m benchmarks.loadtest --model-dir DIR --clients 8 32 128 --requests 5000 --duration 60

Without ``--model-dir`` it trains a model on the bundled MovieLens latest-small ratings (TF1 defaults, 90 %
train split) and exports it to a temporary directory. It then starts the server as a subprocess on a free
127.0.0.1 port and, per route and per count in ``--clients`` (default 8, 32 and 128), runs that many clients
(coroutines of one asyncio loop), each with one keep-alive connection and one request at a time, until
``--requests`` requests are done or ``--duration`` seconds have passed, whichever comes first. Users are drawn with a
fixed seed from the training users, plus ``--unknown-fraction`` of ids that are not in the model. Any answer other
than 200, and any connection error, counts as an error. Client and server share the machine: the
table notes the 1-minute load average before each run. ``--server-args`` are passed to ``python -m trainer.serve``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import queue  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROUTES = ("vertex", "tf1")
PREDICT_ROUTE = "/predict"
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 60


def train_and_export(path: str, sweeps: int, top_k: int) -> list[str]:
    """Fits TF1's default model on the bundled data, exports it to ``path``; returns the training user ids."""
    import wals2

    ratings = wals2.load_bundled()
    train, _ = ratings.split(0.1, seed=0)
    model = wals2.WALSModel(ratings.num_users, ratings.num_items, num_iters=sweeps)
    model.compile(jit_compile=False)
    model.fit(train, verbose=0)
    wals2.export_saved_model(model, path, top_k=top_k)
    return [str(u) for u in train.user_ids[np.unique(train.users)]]


def start_server(model_dir: str, extra: list[str] = (), cwd: str | None = None) -> tuple[subprocess.Popen, int]:
    """Starts ``python -m trainer.serve`` (of the checkout ``cwd``, default this one) on 127.0.0.1 and a free port;
    returns (process, port)."""
    env = dict(os.environ, AIP_PREDICT_ROUTE=PREDICT_ROUTE)
    command = [sys.executable, "-m", "trainer.serve", "--model-dir", model_dir, "--host", "127.0.0.1", "--port", "0"]
    server = subprocess.Popen(
        [*command, *extra],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    seen = []
    while time.monotonic() < deadline and server.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if match:
            return server, int(match.group(1))
    stop_server(server)
    raise RuntimeError("the server did not start:\n" + "".join(seen))


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def request_for(route: str, user: str, batch: int) -> bytes:
    """The HTTP/1.1 request (keep-alive) for ``user``; a Vertex request repeats it ``batch`` times."""
    if route == "tf1":
        return f"GET /recommendation?userId={user}&numRecs=10 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    body = json.dumps({"instances": [{"user_id": user}] * batch}).encode()
    head = f"POST {PREDICT_ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def _exchange(connection, raw: bytes, port: int):
    """Sends ``raw`` on ``connection`` ((reader, writer), opened if None); (status, connection kept or None)."""
    if connection is None:
        connection = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = connection
    writer.write(raw)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
    match = re.search(rb"\r\ncontent-length: *([0-9]+)", head, re.IGNORECASE)
    await reader.readexactly(int(match.group(1)) if match else 0)
    if re.search(rb"\r\nconnection: *close", head, re.IGNORECASE):
        writer.close()
        connection = None
    return int(head[9:12]), connection


def run_load(port: int, route: str, clients: int, users: list[str], args) -> dict:
    """Runs one bounded load of ``clients`` concurrent keep-alive connections on ``route``; returns the figures.

    The clients are coroutines of one asyncio loop in this process, so that the client's own cost per request
    does not grow with their number (threads would contend for the interpreter lock)."""
    load = os.getloadavg()[0]
    latencies: list[float] = []
    errors = [0]
    issued = [0]
    rng = np.random.default_rng(args.seed)
    picks = [users[i] for i in rng.integers(len(users), size=args.requests)]
    if route == "vertex":  # TF1's route answers 400 for unknown users: its load keeps to known ones
        for n in np.flatnonzero(rng.random(args.requests) < args.unknown_fraction):
            picks[n] = f"unknown-{n}"
    started = time.perf_counter()
    deadline = started + args.duration

    async def client():
        connection = None
        while issued[0] < args.requests and time.perf_counter() < deadline:
            raw = request_for(route, picks[issued[0]], args.batch)
            issued[0] += 1
            t0 = time.perf_counter()
            try:
                status, connection = await _exchange(connection, raw, port)
                ok = status == 200
            except (OSError, EOFError, asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
                ok = False
                if connection is not None:
                    connection[1].close()
                connection = None
            latencies.append(time.perf_counter() - t0)
            errors[0] += not ok
        if connection is not None:
            connection[1].close()

    async def all_clients():
        await asyncio.gather(*(client() for _ in range(clients)))

    asyncio.run(all_clients())
    seconds = time.perf_counter() - started
    ms = np.array(latencies) * 1000.0
    return {
        "route": route,
        "clients": clients,
        "batch": args.batch if route == "vertex" else 1,
        "requests": len(latencies),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if ms.size else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if ms.size else None,
        "max_ms": round(float(ms.max()), 2) if ms.size else None,
        "errors": errors[0],
        "load_average": round(load, 2),
    }


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    import tensorflow as tf

    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, TF {tf.__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a wals2 serving SavedModel (default: train on bundled data and export)")
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES))
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[8, 32, 128], help="concurrent clients (asyncio tasks), one run each"
    )
    parser.add_argument("--requests", type=int, default=10000, help="requests per route (upper bound)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per route (upper bound)")
    parser.add_argument("--batch", type=int, default=1, help="user ids per Vertex request")
    parser.add_argument("--unknown-fraction", type=float, default=0.05, help="share of unknown ids (Vertex route)")
    parser.add_argument("--sweeps", type=int, default=20, help="training sweeps without --model-dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-args", default="", help="extra flags of trainer.serve, as one string")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.clients) < 1:
        raise SystemExit(f"`--clients` should be >= 1. Received: clients={args.clients}")
    for name in ("requests", "batch", "sweeps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"`--{name}` should be >= 1. Received: {name}={getattr(args, name)}")
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = os.path.join(scratch, "saved_model")
            started = time.perf_counter()
            users = train_and_export(model_dir, args.sweeps, top_k=10)
            print(f"trained and exported in {time.perf_counter() - started:.1f} s: {model_dir}", flush=True)
        else:
            import tensorflow as tf

            loaded = tf.saved_model.load(model_dir)
            users = [u.decode() for u in loaded.user_vocabulary.numpy()]
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(model_dir) for f in files) / 1024**2
        server, port = start_server(model_dir, args.server_args.split())
        try:
            results = [run_load(port, r, c, users, args) for c in args.clients for r in args.routes]
        finally:
            stop_server(server)
    print(f"machine: {machine()}; SavedModel {size:.2f} MiB")
    print(
        "| route | clients | users/request | requests | seconds | requests/s | p50 ms | p99 ms | max ms | errors "
        "| load average |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['route']} | {r['clients']} | {r['batch']} | {r['requests']} | {r['seconds']} | "
            f"{r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['errors']} "
            f"| {r['load_average']} |"
        )
    for r in results:
        print(json.dumps(r))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
