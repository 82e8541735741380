"""The serve install (`pip install .`, the Docker image) carries no training packages, and serving
never imports one: the training extras stay optional."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[2]
# distribution -> import name of what only training, synthetic data, evaluation or the LLaVA explainer need
TRAIN_ONLY = {"mlflow": "mlflow", "bitsandbytes": "bitsandbytes", "peft": "peft", "accelerate": "accelerate",
              "matplotlib": "matplotlib", "openai": "openai", "deepspeed": "deepspeed",
              "open_clip_torch": "open_clip", "torchvision": "torchvision", "gguf": "gguf"}


def dist_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("-", "_")


def test_base_dependencies_leave_out_training_packages_and_the_extras_bring_them():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {dist_name(r) for r in project["dependencies"]}
    assert not base & set(TRAIN_ONLY), f"training packages in the base (serve) install: {sorted(base & set(TRAIN_ONLY))}"
    extras = project["optional-dependencies"]
    offered = {dist_name(r) for reqs in extras.values() for r in reqs}
    assert set(TRAIN_ONLY) <= offered, f"not offered by any extra: {sorted(set(TRAIN_ONLY) - offered)}"
    assert {"whyrec[llava,openclip]", "mlflow>=2.14"} <= set(extras["train"])


# Runs the serving path in a fresh interpreter and records every import of a training-only package
# whose importing frame is the project's own code (a library that probes for one is its business).
SERVE_SCRIPT = textwrap.dedent("""
    import json, sys
    repo, config, blocked = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
    sys.path.insert(0, repo)
    ours = tuple(f"{repo}/{pkg}/" for pkg in ("retrieval", "synth_data", "llava_tuning", "eval", "api"))
    seen = []

    class Recorder:
        def find_spec(self, name, path=None, target=None):
            if name in blocked:
                f = sys._getframe(1)
                while f and ("importlib" in f.f_code.co_filename or f.f_code.co_filename.startswith("<frozen")):
                    f = f.f_back
                where = f.f_code.co_filename if f else "?"
                if where.startswith(ours):
                    seen.append(f"{name} <- {where[len(repo) + 1:]}:{f.f_lineno}")
            return None

    sys.meta_path.insert(0, Recorder())
    from api.cli import build_parser
    build_parser()  # imports every package's cli module, as `whyrec serve` does
    from fastapi.testclient import TestClient
    from api.main import create_app
    from api.settings import load_settings
    with TestClient(create_app(load_settings(config))) as c:
        hits = c.post("/search", json={"query": "black dress", "k": 3, "explain": True}).json()["results"]
        image = c.get(hits[0]["image_url"])
        status = [c.get("/health").status_code, image.status_code, len(hits), bool(hits[0]["rationale"])]
    print(json.dumps({"training_imports": seen, "status": status}))
""")


@pytest.mark.slow
def test_serving_imports_no_training_package(config_file):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, str(REPO), str(config_file), ",".join(TRAIN_ONLY.values())],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] == [200, 200, 3, True], report
    assert report["training_imports"] == [], f"serving imports training-only packages: {report['training_imports']}"
