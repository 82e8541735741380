"""`whyrec tune`, `whyrec tune merge` and `whyrec explain --backend llava`, end to end on the tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from api.cli import main
from retrieval.catalog import Catalog, Product


def test_tune_merge_explain(tmp_path, data_file, capsys):
    out = tmp_path / "run"
    rc = main(["tune", "--preset", "tiny-random", "--data", data_file, "--max-steps", "4", "--batch-size", "4",
               "--out", str(out), "--mlflow-uri", "", "--mixed-precision", "no", "--eval-every", "0", "--lr", "0.003"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lora"]["steps"] == 4 and Path(result["lora"]["output_dir"]) == out / "adapter"
    assert (out / "adapter" / "adapter_model.safetensors").exists()

    assert main(["tune", "merge", str(out), "--out", str(out / "merged")]) == 0
    assert json.loads(capsys.readouterr().out)["merged"] == str(out / "merged")
    assert (out / "merged" / "model.safetensors").exists()

    img = tmp_path / "jeans.jpg"
    Image.new("RGB", (48, 72), (20, 30, 120)).save(img)
    cat = Catalog([Product(id="j1", title="Slim jeans", attributes={"colour": "Dark Blue", "product_type": "Trousers",
                                                                 "garment_group": "Trousers Denim"},
                           colour="Dark Blue", image_paths=[str(img)])])
    cat.save(tmp_path / "catalog")
    rc = main(["explain", "dark blue jeans", "j1", "--catalog", str(tmp_path / "catalog"), "--backend", "llava",
               "--model", str(out / "merged"), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["text"].strip() and doc["item_id"] == "j1"
    # the model's own text when it passes the check, else the grounded fallback with its reason
    assert (doc["backend"] == "llava" and doc["fallback_reason"] is None) or (doc["backend"] == "grounded" and doc["fallback_reason"])
    assert doc["grounding"]["ok"]


def test_tune_bad_input_exits_2(tmp_path, capsys):
    assert main(["tune", "--preset", "tiny-random", "--data", str(tmp_path / "none.jsonl"), "--mlflow-uri", ""]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["tune", "--preset", "tiny-random", "--mlflow-uri", ""]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["tune", "merge", str(tmp_path), "--out", str(tmp_path / "m")]) == 2


@pytest.mark.slow
def test_two_process_data_parallel_run(tmp_path, data_file):
    """The same loop under torch.distributed (2 CPU processes, gloo): what `accelerate launch` does on
    GPUs. Both ranks train on disjoint shards, the eval loss is reduced across them, one adapter is saved."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29561", "-m", "api.cli", "tune", "--preset", "tiny-random",
           "--data", data_file, "--eval-data", data_file, "--max-steps", "4", "--batch-size", "2", "--out", str(out),
           "--mlflow-uri", "", "--save-every", "2", "--eval-every", "0", "--mixed-precision", "no"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # one report, from rank 0
    assert result["lora"]["examples_seen"] == 4 * 2 * 2
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    ckpt = out / "checkpoints" / "step-000002"
    assert (ckpt / "random_states_0.pkl").exists() and (ckpt / "random_states_1.pkl").exists()
