"""Property-based fuzzing of the whole API from its own /openapi.json (schemathesis, every check):
no 5xx, no response that breaks the schema, no schema-valid request refused, no invalid one accepted.
Bounded: a few examples per operation and a fixed seed."""
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors_or_schema_violations(live, artifacts, tmp_path):
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"{live.url}/openapi.json",
           "--max-examples", "8", "--seed", "7", "--generation-database", "none", "--no-color", "--workers", "1",
           "--request-timeout", "60", "--report", "junit", "--report-junit-path", str(artifacts / "schemathesis.xml")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its caches stay out of the repo
    (artifacts / "schemathesis.log").write_text(out.stdout + out.stderr)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "passed" in out.stdout and "Server error" not in out.stdout
