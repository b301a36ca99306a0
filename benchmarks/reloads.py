"""Resident memory of ``python -m trainer.serve`` over hot reloads: VmRSS after each new version is served.

    python -m benchmarks.reloads                      # 50 reloads of a model trained on bundled latest-small
    python -m benchmarks.reloads --reloads 20 --requests 50 --model-dir DIR

It exports one model (``benchmarks.loadtest.train_and_export``, or ``--model-dir``), serves ``<base>/1/`` and then,
``--reloads`` times, copies the export into a staging directory, renames it to the next version number, waits
until ``/health`` reports that version, sends ``--requests`` Vertex requests (all answered 200, or the run fails)
and reads the server process's ``VmRSS`` and ``VmHWM`` from ``/proc/<pid>/status``. Only the two newest versions
are kept on disk. It prints one JSON line per reload and a summary line with the RSS after the first reload, the
last, and their difference per reload.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from benchmarks import loadtest  # noqa: E402

SERVE_TIMEOUT_S = 120


def memory_mb(pid: int) -> dict:
    """``VmRSS`` and ``VmHWM`` of process ``pid`` in MB (Linux)."""
    found = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return found


def served_version(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as answer:
        return int(json.loads(answer.read())["model_version"])


def predict(port: int, users: list[str]) -> None:
    body = json.dumps({"instances": [{"user_id": user} for user in users]}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{loadtest.PREDICT_ROUTE}", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status != 200:
            raise RuntimeError(f"predict answered {answer.status}")
        answer.read()


def publish(export: str, base: str, version: int) -> None:
    """Copies ``export`` to ``<base>/<version>`` through a staging directory (the server never sees half of it)."""
    staged = tempfile.mkdtemp(prefix=".staging-", dir=base)
    shutil.copytree(export, staged, dirs_exist_ok=True)
    os.rename(staged, os.path.join(base, str(version)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reloads", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="a wals2 serving SavedModel (default: train on bundled data and export)")
    parser.add_argument("--reloads", type=int, default=50, help="new versions served one after the other")
    parser.add_argument("--requests", type=int, default=20, help="Vertex requests after each reload")
    parser.add_argument("--sweeps", type=int, default=5, help="training sweeps without --model-dir")
    parser.add_argument("--server-args", default="", help="extra flags of trainer.serve, as one string")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.reloads < 1 or args.requests < 1:
        raise SystemExit(
            f"--reloads and --requests should be positive integers. Received: {args.reloads}, {args.requests}"
        )
    with tempfile.TemporaryDirectory(prefix="wals2-reloads-") as work:
        export = args.model_dir
        users = ["1", "2", "3"]
        if export is None:
            export = os.path.join(work, "export")
            users = loadtest.train_and_export(export, args.sweeps, top_k=10)[:8]
        base = os.path.join(work, "models")
        os.makedirs(base)
        publish(export, base, 1)
        extra = ["--poll-interval", "0.2", *args.server_args.split()]
        server, port = loadtest.start_server(base, extra)
        lines = []
        try:
            for version in range(1, args.reloads + 2):
                if version > 1:
                    publish(export, base, version)
                    if version > 3:
                        shutil.rmtree(os.path.join(base, str(version - 2)))
                deadline = time.monotonic() + SERVE_TIMEOUT_S
                while served_version(port) != version:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"version {version} was not served within {SERVE_TIMEOUT_S} s")
                    time.sleep(0.05)
                for i in range(args.requests):
                    predict(port, [users[i % len(users)]])
                line = {"reload": version - 1, "version": version, **memory_mb(server.pid)}
                lines.append(line)
                print(json.dumps(line), flush=True)
        finally:
            loadtest.stop_server(server)
    first, last = lines[1], lines[-1]  # after the first reload, after the last (--reloads >= 1)
    per_reload = (last["VmRSS"] - first["VmRSS"]) / max(1, last["reload"] - first["reload"])
    summary = {
        "reloads": args.reloads,
        "rss_mb_after_first_reload": round(first["VmRSS"], 1),
        "rss_mb_after_last_reload": round(last["VmRSS"], 1),
        "mb_per_reload": round(per_reload, 2),
        "peak_mb": round(max(line["VmHWM"] for line in lines), 1),
        "cpu": loadtest.machine(),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
