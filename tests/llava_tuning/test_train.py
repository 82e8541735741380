"""Training: the loss falls, only the intended weights move, checkpoints resume exactly, MLflow gets the run."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llava_tuning.adapters import load_model
from llava_tuning.presets import create_model
from llava_tuning.train import tune

from tests.llava_tuning.conftest import tune_config


@pytest.mark.slow  # creating the MLflow sqlite store takes ~10 s
def test_lora_loss_falls_and_mlflow_records_the_run(tmp_path, data_file):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = tune_config(tmp_path, data_file, max_steps=30, mlflow_uri=uri, mlflow_artifacts=str(tmp_path / "artifacts"),
                      experiment="test-llava", grad_accum=2, batch_size=2)
    res = tune(cfg)["lora"]
    assert res.steps == 30 and res.examples_seen == 30 * 4
    assert res.eval_loss_after < res.eval_loss_before - 0.5, (res.eval_loss_before, res.eval_loss_after)
    assert res.train_loss_last < res.train_loss_first
    # LoRA (attention + MLP of the language model) and the projector, nothing else
    bundle = create_model("tiny-random")
    projector = sum(p.numel() for p in bundle.model.model.multi_modal_projector.parameters())
    assert projector < res.params_trainable < projector + 0.2 * sum(p.numel() for p in bundle.model.parameters())
    adapter = load_file(str(Path(res.output_dir) / "adapter_model.safetensors"))
    lora_mods = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in adapter if ".lora_" in k}
    assert lora_mods == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert all("language_model" in k or "multi_modal_projector" in k for k in adapter)
    assert not any("vision_tower" in k for k in adapter)

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(res.mlflow_run_id)
    assert run.data.params["lr"] == "0.003" and run.data.params["stage_run"] == "lora"
    assert run.data.params["lora.r"] == "8"
    evals = client.get_metric_history(res.mlflow_run_id, "eval_loss")
    assert [m.step for m in evals] == [0, 10, 20, 30]
    assert evals[-1].value == pytest.approx(res.eval_loss_after)
    files = {f.path for f in client.list_artifacts(res.mlflow_run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in files and "adapter/whyrec_model.json" in files
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["eval_loss_after"] == pytest.approx(res.eval_loss_after)


def test_projector_stage_moves_only_the_projector(tmp_path, data_file):
    res = tune(tune_config(tmp_path, data_file, stage="projector", max_steps=5, eval_every=0))["projector"]
    trained = load_model(res.output_dir).model.state_dict()
    base = create_model("tiny-random").model.state_dict()
    assert set(trained) == set(base)
    moved = {k for k in base if not torch.equal(base[k], trained[k])}
    assert moved and all(k.startswith("model.multi_modal_projector.") for k in moved)


def test_both_stages_chain(tmp_path, data_file):
    res = tune(tune_config(tmp_path, data_file, stage="both", stage1_kinds=["description"], stage1_steps=3, max_steps=3,
                           kinds=["explain"], eval_every=0))
    assert res["projector"].train_examples == 8 and res["lora"].train_examples == 8  # descriptions, then explain records
    meta = json.loads((Path(res["lora"].output_dir) / "whyrec_model.json").read_text())
    assert meta["init_projector"] == res["projector"].output_dir
    # resuming a two-stage run does not redo a finished stage 1
    stamp = (Path(res["projector"].output_dir) / "projector.safetensors").stat().st_mtime_ns
    again = tune(tune_config(tmp_path, data_file, stage="both", stage1_kinds=["description"], stage1_steps=3, max_steps=3,
                             kinds=["explain"], eval_every=0, resume=True))
    assert (Path(res["projector"].output_dir) / "projector.safetensors").stat().st_mtime_ns == stamp
    assert again["projector"].steps == 3 and again["lora"].steps == 3


def test_resume_refuses_a_checkpoint_of_another_setup(tmp_path, data_file):
    tune(tune_config(tmp_path, data_file, max_steps=4, save_every=2, eval_every=0))
    with pytest.raises(ValueError, match="does not fit"):
        tune(tune_config(tmp_path, data_file, max_steps=4, save_every=2, eval_every=0, resume=True, lora_r=4))


def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path, data_file):
    """16 examples, batch 2, accumulation 2: 4 steps an epoch. Stop after the step-6 checkpoint
    (mid-epoch), resume, and land on the same adapter as a run that never stopped."""
    cfg = tune_config(tmp_path, data_file, max_steps=10, batch_size=2, grad_accum=2, save_every=2, keep_checkpoints=5,
                      eval_every=0)
    tune(cfg)
    full = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    out = tmp_path / "out"
    shutil.rmtree(out / "adapter")
    shutil.rmtree(out / "checkpoints" / "step-000008")
    assert (out / "checkpoints" / "step-000006").exists()
    res = tune(dataclasses.replace(cfg, resume=True))["lora"]
    assert res.resumed_from_step == 6 and res.steps == 10
    again = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert set(again) == set(full)
    for k in full:
        assert torch.allclose(full[k], again[k], atol=1e-6), k
    # a checkpoint holds the trainable weights only
    ckpt = load_file(str(out / "checkpoints" / "step-000006" / "model.safetensors"))
    assert all("lora_" in k or "multi_modal_projector" in k for k in ckpt)


def test_bad_config_is_refused(tmp_path, data_file):
    with pytest.raises(ValueError, match="stage"):
        tune(tune_config(tmp_path, data_file, stage="everything"))
    with pytest.raises(ValueError, match="no training data"):
        tune(tune_config(tmp_path, ""))
    with pytest.raises(ValueError, match="description"):
        tune(tune_config(tmp_path, data_file, stage="both", stage1_kinds=["nothing"]))
