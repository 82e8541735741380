"""A real `whyrec serve` child process for evaluations and benchmarks: eval/ never imports api/."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


def sse_events(response) -> Iterator[tuple[str, dict]]:
    """(event, JSON data) of each server-sent event of a streamed httpx response, as it arrives."""
    event, data = None, []
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and event:
            yield event, json.loads("\n".join(data))
            event, data = None, []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(config: str, timeout: float = 300, env: dict[str, str] | None = None,
                 log_path: str | Path | None = None) -> tuple[subprocess.Popen, str]:
    """`whyrec serve --config CONFIG` on a free 127.0.0.1 port; returns once /health answers.
    `env` adds variables (WHYREC_* settings); the server's output goes to `log_path` (else dropped,
    with its error output kept for the failure message)."""
    import httpx

    port = free_port()
    repo = str(Path(__file__).resolve().parents[1])
    full_env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])), **(env or {})}
    log = open(log_path, "w") if log_path else None
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--config", config, "--host", "127.0.0.1", "--port", str(port)],
                            env=full_env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else subprocess.PIPE, text=True)

    def output() -> str:
        return Path(log_path).read_text()[-2000:] if log_path else proc.stderr.read()[-2000:]

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"whyrec serve exited with {proc.returncode}: {output()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"whyrec serve did not answer /health within {timeout:.0f} s")
