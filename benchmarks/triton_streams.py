"""Many cameras: Triton (Python backend, dynamic batching) against one process per stream
and one process for all streams, at 1, 4 and 16 concurrent streams.

Each stream is a camera sending its next frame as soon as the previous one is labelled
(closed loop), for ``--seconds``. Reported per setup and stream count: frames per second
(all streams together) and per-frame latency p50 / p99 (ms). Prints one JSON object.

    python benchmarks/triton_streams.py --bundle BUNDLE --streams 1 4 16 --seconds 20

- ``triton``: ``reminder triton serve`` on a repository with the bundle (``--platform
  python``), one client thread per stream (HTTP), the server batching what arrives;
- ``process_per_stream``: one process per stream, each a ``Predictor`` on ONNX Runtime
  with ``--threads`` threads (``reminder run`` per camera);
- ``one_process``: one process, all streams' frames batched into one inference
  (``reminder run`` with every camera).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import socket
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def _frames(size: int, count: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def _summary(latencies: list[float], frames: int, seconds: float) -> dict:
    ms = np.array(latencies) * 1000
    return {"fps": round(frames / seconds, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "frames": frames}


def _closed_loop(predict, frames, seconds: float, latencies: list, stop_at: float) -> int:
    done = 0
    while time.monotonic() < stop_at:
        began = time.monotonic()
        predict(frames[done % len(frames)])
        latencies.append(time.monotonic() - began)
        done += 1
    return done


def run_triton(bundle: str, streams: int, size: int, seconds: float, threads: int) -> dict:
    from reminder.bundle import read_manifest
    from reminder.runtime.predictor import Predictor
    from reminder.serving.repository import add_bundle
    from reminder.serving.server import TritonServer

    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as workdir:
        repo = Path(workdir) / "repo"
        add_bundle(repo, bundle, max_batch_size=max(16, streams), queue_delay_us=2000)
        with TritonServer(repo, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
                          threads=threads) as server:
            name = read_manifest(bundle).name
            clients = [Predictor(name, backend="triton", url=server.http_url) for _ in range(streams)]
            frames = _frames(size)
            for client in clients:
                client.predict(frames[0])
            latencies: list[float] = []
            counts = [0] * streams
            stop_at = time.monotonic() + seconds

            def work(i):
                counts[i] = _closed_loop(clients[i].predict, frames, seconds, latencies, stop_at)
            workers = [threading.Thread(target=work, args=(i,)) for i in range(streams)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            return _summary(latencies, sum(counts), seconds)


def _one_stream(bundle: str, size: int, seconds: float, threads: int, start_at: float, queue) -> None:
    from reminder.runtime.predictor import Predictor

    predictor = Predictor(bundle, backend="ort", threads=threads)
    frames = _frames(size)
    predictor.predict(frames[0])
    latencies: list[float] = []
    time.sleep(max(0.0, start_at - time.time()))
    stop_at = time.monotonic() + seconds
    done = _closed_loop(predictor.predict, frames, seconds, latencies, stop_at)
    queue.put((done, latencies))


def run_process_per_stream(bundle: str, streams: int, size: int, seconds: float, threads: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    start_at = time.time() + 5 + streams * 0.5  # every process loaded before the clock starts
    processes = [context.Process(target=_one_stream, args=(bundle, size, seconds, threads, start_at, queue))
                 for _ in range(streams)]
    for process in processes:
        process.start()
    results = [queue.get() for _ in processes]
    for process in processes:
        process.join()
    return _summary([v for _, lat in results for v in lat], sum(n for n, _ in results), seconds)


def run_one_process(bundle: str, streams: int, size: int, seconds: float, threads: int) -> dict:
    """Every stream's next frame in one batch; each frame waits for the whole batch."""
    from reminder.runtime.predictor import Predictor

    predictor = Predictor(bundle, backend="ort", threads=threads)
    frames = _frames(size)
    predictor.predict([frames[0]] * streams)
    latencies: list[float] = []
    done = 0
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        began = time.monotonic()
        predictor.predict([frames[(done + i) % len(frames)] for i in range(streams)])
        latencies.extend([time.monotonic() - began] * streams)
        done += streams
    return _summary(latencies, done, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads per model instance/process.")
    parser.add_argument("--setups", nargs="+", default=["triton", "process_per_stream", "one_process"])
    args = parser.parse_args()
    setups = {"triton": run_triton, "process_per_stream": run_process_per_stream, "one_process": run_one_process}
    results = {}
    for setup in args.setups:
        for streams in args.streams:
            results[f"{setup} {streams}"] = setups[setup](args.bundle, streams, args.size, args.seconds, args.threads)
            print(setup, streams, results[f"{setup} {streams}"], flush=True, file=__import__("sys").stderr)
    print(json.dumps({"benchmark": "triton_streams", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} CPUs", "bundle": args.bundle,
                      "size": args.size, "seconds": args.seconds, "threads": args.threads, "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
