"""`whyrec serve --config ...` as a user runs it: a separate process serving the API and the page."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_whyrec_serve_starts_from_a_config_and_serves(config_file, tmp_path):
    port = free_port()
    env = {**os.environ, "WHYREC_LOG_LEVEL": "warning", "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--config", str(config_file), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "whyrec serve did not come up in 180 s"
            time.sleep(0.5)
        assert "whyrec" in httpx.get(url + "/").text
        r = httpx.post(url + "/search", json={"query": "white shirt", "k": 3}, timeout=60)
        assert r.status_code == 200 and len(r.json()["results"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_serve_without_a_config_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("WHYREC_CONFIG", raising=False)
    from api.cli import main

    assert main(["serve", "--port", "1"]) == 2
    assert main(["serve", "--config", str(tmp_path / "missing.yaml")]) == 2
