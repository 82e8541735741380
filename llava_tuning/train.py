"""Two-stage LLaVA tuning with `accelerate`: stage 1 aligns the projector on image descriptions,
stage 2 trains LoRA on the language model's attention + MLP projections (and the projector) on
instruction data. The loss covers the assistant's tokens only (see `processor`/`data`).

One loop serves a laptop CPU and `accelerate launch` on many GPUs (DDP or DeepSpeed ZeRO-2, config
files in configs/accelerate/): gradient accumulation, eval loss every N steps, checkpoints that
hold only the trainable weights + optimizer/scheduler/RNG state, resume, and MLflow logging of
parameters, metrics and the adapter to a local store.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import random
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from retrieval.artifacts import atomic_dir, atomic_write_json

log = logging.getLogger(__name__)

STAGES = ("projector", "lora", "both")
STATE_FILE = "trainer_state.json"
PROJECTOR_FILE = "projector.safetensors"
SUMMARY_FILE = "train_summary.json"


@dataclass
class TuneConfig:
    """Everything a tuning run needs; filled from the `tune:` section of a YAML file plus flags."""

    preset: str = "tiny-offline"  # a preset name or a YAML file with a `model:` section
    cache_dir: str = ""  # overrides the preset's model cache
    data: str = ""  # LLaVA conversation JSONL
    eval_data: str = ""  # held-out JSONL; empty: split eval_fraction off `data`
    eval_fraction: float = 0.05
    max_eval_examples: int = 64
    max_examples: int = 0  # 0: all
    kinds: list[str] = field(default_factory=list)  # record kinds stage 2 trains on; empty: all
    stage: str = "lora"  # projector | lora | both
    stage1_kinds: list[str] = field(default_factory=lambda: ["description", "caption"])
    stage1_steps: int = 0  # "both": steps of stage 1 (0: one epoch of its examples)
    init_projector: str = ""  # a stage-1 output dir (or projector.safetensors) to start stage 2 from
    output_dir: str = "var/tune/tiny-offline"
    max_steps: int = 0  # optimizer steps; 0: `epochs` passes over the data
    epochs: float = 1.0
    max_minutes: float = 0.0  # wall-clock budget per stage (0: none); training stops early and still saves
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    projector_lr: float = 1e-3  # stage 1
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_length: int = 384
    eval_every: int = 50
    save_every: int = 100
    keep_checkpoints: int = 2
    resume: bool = False  # continue from the newest checkpoint in output_dir
    log_every: int = 10
    seed: int = 0
    mixed_precision: str = "bf16"  # no | bf16 | fp16 (fp16 only on GPU)
    threads: int = 0  # torch CPU threads; 0: leave as is
    lora_r: int = 0  # 0: the preset's
    lora_alpha: int = 0
    mlflow_uri: str = "sqlite:///var/mlflow/mlflow.db"  # "" turns MLflow off
    mlflow_artifacts: str = "var/mlflow/artifacts"
    experiment: str = "whyrec-llava"
    run_name: str = ""


@dataclass
class StageResult:
    stage: str
    output_dir: str
    steps: int
    examples_seen: int
    wall_s: float
    steps_per_s: float
    examples_per_s: float
    peak_rss_mb: float
    eval_loss_before: float | None
    eval_loss_after: float | None
    train_loss_first: float | None
    train_loss_last: float | None
    train_examples: int
    eval_examples: int
    params_trainable: int
    mlflow_run_id: str | None = None
    resumed_from_step: int = 0
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- helpers
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def split_records(records: list[dict], fraction: float, seed: int, max_eval: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole items (all records of an item_id go one way) so eval never sees a training item."""
    items = sorted({r.get("item_id") or r["id"] for r in records})
    random.Random(seed).shuffle(items)
    n_eval = max(1, int(round(len(items) * fraction))) if fraction > 0 and len(items) > 1 else 0
    held = set(items[:n_eval])
    train = [r for r in records if (r.get("item_id") or r["id"]) not in held]
    evals = [r for r in records if (r.get("item_id") or r["id"]) in held][: max_eval or None]
    return train, evals


def load_projector(model, path: str | Path) -> None:
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / PROJECTOR_FILE
    if not path.exists():
        raise FileNotFoundError(f"projector weights {path} not found (run stage 1: --stage projector)")
    from llava_tuning.presets import PROJECTOR

    getattr(model.model, PROJECTOR).load_state_dict(load_file(str(path)))


def _checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first: STATE_FILE is written (atomically) after the rest."""
    done = [p for p in (output_dir / "checkpoints").glob("step-*") if (p / STATE_FILE).exists()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def _mlflow_start(cfg: TuneConfig, stage: str, params: dict):
    if not cfg.mlflow_uri:
        return None
    import mlflow

    if cfg.mlflow_uri.startswith("sqlite:///"):
        Path(cfg.mlflow_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.mlflow_uri)
    if mlflow.get_experiment_by_name(cfg.experiment) is None:
        art = Path(cfg.mlflow_artifacts).resolve()
        art.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(cfg.experiment, artifact_location=art.as_uri())
    mlflow.set_experiment(cfg.experiment)
    run = mlflow.start_run(run_name=cfg.run_name or f"{Path(cfg.output_dir).name}-{stage}")
    flat = {}
    for k, v in params.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
    return run


def _evaluate(model, loader, accelerator) -> float | None:
    from llava_tuning.data import masked_loss

    if loader is None:
        return None
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    with torch.no_grad():
        for batch in loader:
            loss, n = masked_loss(model, batch)
            total += torch.tensor([float(loss), n], dtype=torch.float64, device=accelerator.device)
    total = accelerator.reduce(total, "sum")
    model.train(was_training)
    return float(total[0] / total[1]) if total[1] > 0 else None


def _save_outputs(accelerator, model, bundle, stage: str, out: Path, cfg: TuneConfig) -> Path:
    """Stage 1: projector.safetensors; stage 2: a peft adapter dir. Both carry the preset."""
    from llava_tuning.presets import MODEL_FILE, PROJECTOR

    target = out / ("projector" if stage == "projector" else "adapter")
    if accelerator.is_main_process:
        inner = accelerator.unwrap_model(model)
        with atomic_dir(target) as tmp:  # the old adapter stays whole until the new one is complete
            if stage == "projector":
                from safetensors.torch import save_file

                state = {k: v.detach().float().cpu().contiguous() for k, v in getattr(inner.model, PROJECTOR).state_dict().items()}
                save_file(state, str(tmp / PROJECTOR_FILE))
            else:
                inner.save_pretrained(str(tmp), save_embedding_layers=False)
            meta = {"preset": bundle.preset.to_dict(), "stage": stage, "init_projector": cfg.init_projector, "data": cfg.data}
            (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=2))
    accelerator.wait_for_everyone()
    return target


# ----------------------------------------------------------------------------- one stage
def run_stage(cfg: TuneConfig, stage: str, train_records: list[dict], eval_records: list[dict], output_dir: Path) -> StageResult:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from tqdm import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from llava_tuning.data import Collator, ConversationDataset, masked_loss
    from llava_tuning.presets import create_model, prepare_for_training, trainable_summary

    output_dir.mkdir(parents=True, exist_ok=True)
    use_cpu = not torch.cuda.is_available()
    mp = cfg.mixed_precision if not (use_cpu and cfg.mixed_precision == "fp16") else "bf16"
    accelerator = Accelerator(mixed_precision=mp, gradient_accumulation_steps=cfg.grad_accum, cpu=use_cpu,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    set_seed(cfg.seed)

    overrides: dict[str, Any] = {"cache_dir": cfg.cache_dir or None}
    bundle = create_model(cfg.preset, **overrides)
    if cfg.lora_r or cfg.lora_alpha:
        lora = dataclasses.replace(bundle.preset.lora, r=cfg.lora_r or bundle.preset.lora.r, alpha=cfg.lora_alpha or bundle.preset.lora.alpha)
        bundle.preset = dataclasses.replace(bundle.preset, lora=lora)
    if cfg.init_projector and stage == "lora":
        load_projector(bundle.model, cfg.init_projector)
    model = prepare_for_training(bundle, stage)
    sizes = trainable_summary(model)

    train_ds = ConversationDataset(train_records, bundle.processor, cfg.max_length)
    eval_ds = ConversationDataset(eval_records, bundle.processor, cfg.max_length) if eval_records else None
    collate = Collator(bundle.processor)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate, drop_last=False)
    eval_loader = torch.utils.data.DataLoader(eval_ds, batch_size=cfg.batch_size, collate_fn=collate) if eval_ds else None

    lr = cfg.projector_lr if stage == "projector" else cfg.lr
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    updates_per_epoch = max(1, math.ceil(len(loader) / cfg.grad_accum))
    steps_cap = cfg.stage1_steps if (stage == "projector" and cfg.stage == "both" and cfg.stage1_steps) else cfg.max_steps
    total_steps = steps_cap or max(1, math.ceil(cfg.epochs * updates_per_epoch))
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(cfg.warmup_steps, total_steps // 2), total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)

    def keep_trainable(models, weights, _dir):
        # a checkpoint holds what training changes; the frozen base is rebuilt from the preset
        for i, m in enumerate(models):
            names = {n for n, p in m.named_parameters() if p.requires_grad}
            weights[i] = {k: v for k, v in weights[i].items() if k in names}

    accelerator.register_save_state_pre_hook(keep_trainable)

    step = 0
    ckpts = _checkpoints(output_dir)
    if cfg.resume and ckpts:
        weights = ckpts[-1] / "model.safetensors"
        if weights.exists():  # strict=False below (the frozen base is not in it): check the trainable part is
            from safetensors import safe_open

            with safe_open(str(weights), "pt") as fh:
                saved = {k: list(fh.get_slice(k).get_shape()) for k in fh.keys()}
            missing = {n for n, p in model.named_parameters() if p.requires_grad and saved.get(n) != list(p.shape)}
            if missing:
                raise ValueError(f"checkpoint {ckpts[-1]} does not fit this run (missing {sorted(missing)[:3]}...): "
                                 "same preset, stage and LoRA settings are needed to resume")
        accelerator.load_state(str(ckpts[-1]), strict=False)
        step = json.loads((ckpts[-1] / STATE_FILE).read_text())["step"]
        log.info("resumed from %s (step %d)", ckpts[-1], step)
    resumed_from = step

    run = None
    if accelerator.is_main_process:
        params_log = {**dataclasses.asdict(cfg), "stage_run": stage, "preset_resolved": bundle.preset.to_dict(), **sizes,
                      "train_examples": len(train_ds), "eval_examples": len(eval_ds) if eval_ds else 0, "total_steps": total_steps}
        params_log.pop("lora_r"), params_log.pop("lora_alpha")
        params_log["preset_resolved"] = {k: v for k, v in params_log["preset_resolved"].items() if k != "lora"}
        params_log["lora"] = dataclasses.asdict(bundle.preset.lora)
        run = _mlflow_start(cfg, stage, params_log)
        log.info("stage %s: %d train / %d eval examples, %s, %d steps; tokens %s", stage, len(train_ds),
                 len(eval_ds) if eval_ds else 0, sizes, total_steps, train_ds.token_stats())

    def log_metrics(metrics: dict, at: int) -> None:
        history.append({"step": at, **metrics})
        if run is not None:
            import mlflow

            mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None}, step=at)

    history: list[dict] = []
    eval_before = _evaluate(model, eval_loader, accelerator)
    log_metrics({"eval_loss": eval_before}, step)
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc=f"tune {stage}", unit="step", disable=not accelerator.is_local_main_process)
    losses: list[float] = []
    first_loss = last_loss = None
    eval_after = eval_before
    start = time.perf_counter()
    micro = step * cfg.grad_accum
    epoch = micro // len(loader)
    while step < total_steps:
        loader.set_epoch(epoch)
        skip = micro - epoch * len(loader)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in batches:
            with accelerator.accumulate(model):
                loss_sum, n = masked_loss(model, batch)
                loss = loss_sum / max(n, 1)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            micro += 1
            losses.append(float(loss.detach()))
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == total_steps or step == resumed_from + 1:
                mean = sum(losses) / len(losses)
                first_loss = mean if first_loss is None else first_loss
                last_loss = mean
                losses.clear()
                bar.set_postfix(loss=f"{mean:.3f}")
                log_metrics({"train_loss": mean, "lr": scheduler.get_last_lr()[0]}, step)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
                eval_after = _evaluate(model, eval_loader, accelerator)
                log_metrics({"eval_loss": eval_after}, step)
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                _save_checkpoint(accelerator, output_dir, step, cfg.keep_checkpoints)
            if cfg.max_minutes and time.perf_counter() - start > cfg.max_minutes * 60 and step < total_steps:
                log.warning("stage %s: %.1f min budget reached at step %d of %d; stopping", stage, cfg.max_minutes, step, total_steps)
                total_steps = step
            if step >= total_steps:
                break
        epoch += 1
    bar.close()
    wall = time.perf_counter() - start
    eval_after = _evaluate(model, eval_loader, accelerator)
    log_metrics({"eval_loss": eval_after}, step)
    target = _save_outputs(accelerator, model, bundle, stage, output_dir, cfg)
    done = step - resumed_from
    result = StageResult(
        stage=stage, output_dir=str(target), steps=step, examples_seen=done * cfg.batch_size * cfg.grad_accum * accelerator.num_processes,
        wall_s=round(wall, 2), steps_per_s=round(done / wall, 4) if wall > 0 else 0.0,
        examples_per_s=round(done * cfg.batch_size * cfg.grad_accum * accelerator.num_processes / wall, 3) if wall > 0 else 0.0,
        peak_rss_mb=round(peak_rss_mb(), 1), eval_loss_before=eval_before, eval_loss_after=eval_after,
        train_loss_first=first_loss, train_loss_last=last_loss, train_examples=len(train_ds),
        eval_examples=len(eval_ds) if eval_ds else 0, params_trainable=sizes["params_trainable"],
        resumed_from_step=resumed_from, history=history,
    )
    if torch.cuda.is_available():
        result.peak_rss_mb = round(max(result.peak_rss_mb, torch.cuda.max_memory_allocated() / 2**20), 1)
    if run is not None:
        import mlflow

        mlflow.log_metrics({"wall_s": result.wall_s, "steps_per_s": result.steps_per_s, "peak_rss_mb": result.peak_rss_mb})
        mlflow.log_artifacts(str(target), artifact_path=target.name)
        result.mlflow_run_id = run.info.run_id
        mlflow.end_run()
    if accelerator.is_main_process:
        atomic_write_json(output_dir / SUMMARY_FILE, result.to_dict(), indent=2)
    accelerator.end_training()
    return result


def _save_checkpoint(accelerator, output_dir: Path, step: int, keep: int) -> None:
    path = output_dir / "checkpoints" / f"step-{step:06d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        atomic_write_json(path / STATE_FILE, {"step": step})
        for old in _checkpoints(output_dir)[:-keep] if keep else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- entry point
def tune(cfg: TuneConfig) -> dict[str, StageResult]:
    """Run stage 1, stage 2 or both; returns the result of each stage run."""
    from llava_tuning.data import read_records

    if cfg.stage not in STAGES:
        raise ValueError(f"unknown stage {cfg.stage!r}; choose from {STAGES}")
    if not cfg.data:
        raise ValueError("no training data: pass --data FILE.jsonl (LLaVA conversation records)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    records = read_records(cfg.data, limit=cfg.max_examples or None)
    if cfg.eval_data:
        train, evals = records, read_records(cfg.eval_data)
    else:
        train, evals = split_records(records, cfg.eval_fraction, cfg.seed, 0)
    cap = cfg.max_eval_examples or None

    def of_kinds(rows: list[dict], kinds) -> list[dict]:
        return [r for r in rows if r.get("kind") in set(kinds)] if kinds else rows

    results: dict[str, StageResult] = {}
    done_stage1 = out / "stage1" / "projector"
    if cfg.stage == "both" and cfg.resume and (done_stage1 / PROJECTOR_FILE).exists():
        log.info("stage 1 already done (%s); resuming stage 2", done_stage1)
        summary = json.loads((out / "stage1" / SUMMARY_FILE).read_text())
        results["projector"] = StageResult(**summary)
    elif cfg.stage in ("projector", "both"):
        kinds = cfg.stage1_kinds if cfg.stage == "both" else None
        s1_train = of_kinds(train, kinds)
        if not s1_train:
            raise ValueError(f"stage 1 needs image-description records (kind in {sorted(kinds or [])}); none in {cfg.data}")
        results["projector"] = run_stage(cfg, "projector", s1_train, of_kinds(evals, kinds)[:cap],
                                         out / "stage1" if cfg.stage == "both" else out)
        gc.collect()  # stage 1's model goes before stage 2 builds its own
    if cfg.stage in ("lora", "both"):
        train, evals = of_kinds(train, cfg.kinds), of_kinds(evals, cfg.kinds)[:cap]
        if not train:
            raise ValueError(f"no training records of kinds {cfg.kinds} in {cfg.data}")
        s2 = cfg
        if cfg.stage == "both":
            s2 = dataclasses.replace(cfg, init_projector=results["projector"].output_dir)
        results["lora"] = run_stage(s2, "lora", train, evals, out)
    return results
