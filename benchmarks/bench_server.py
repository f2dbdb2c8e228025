"""Server load: jobs per second for a trivial graph, and submission latency with up to 100 jobs queued.

Loopback only, bounded in count and time. The server runs as a separate process.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRIVIAL = {"version": 1, "name": "trivial", "params": {"text": {"type": "str", "default": "x"}},
           "nodes": {"clean": {"type": "text.normalize", "inputs": {"text": {"param": "text"}}}},
           "outputs": {"text": "clean.text"}}


def _post(port: int, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/jobs", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def run(jobs: int = 100, timeout_s: float = 120) -> dict[str, Any]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = Path(tempfile.mkdtemp(prefix="sfumato-load-"))
    server = subprocess.Popen([sys.executable, "-m", "sfumato.cli.main", "serve", "--port", str(port), "--data",
                               str(data), "--graphs", str(REPO / "graphs"), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                _get(port, "/api/models")
                break
            except OSError:
                time.sleep(0.2)
        latencies = []
        started = time.perf_counter()
        ids = []
        for index in range(jobs):
            begin = time.perf_counter()
            ids.append(_post(port, {"graph": TRIVIAL, "params": {"text": f"job {index}"}})["id"])
            latencies.append(time.perf_counter() - begin)
        while time.perf_counter() - started < timeout_s:
            if _get(port, "/api/jobs?status=done&limit=1")["total"] >= jobs:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        done = _get(port, "/api/jobs?status=done&limit=1")["total"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies.sort()
    result = {"jobs": jobs, "done": done, "seconds": elapsed, "jobs_per_s": done / elapsed,
              "submit_p50_ms": statistics.median(latencies) * 1000,
              "submit_p95_ms": latencies[int(len(latencies) * 0.95) - 1] * 1000}
    print(f"  {done}/{jobs} trivial jobs in {elapsed:.2f} s = {result['jobs_per_s']:.1f} jobs/s; submission latency "
          f"p50 {result['submit_p50_ms']:.1f} ms, p95 {result['submit_p95_ms']:.1f} ms (queue up to {jobs})")
    result["ratio"] = {"jobs_per_s": result["jobs_per_s"]}
    print(f"  ratio: jobs_per_s = {result['jobs_per_s']:.1f}")
    return result
