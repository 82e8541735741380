"""`whyrec ablate configs/ablations/NAME.yaml`: a grid of configurations of one evaluation, logged
to MLflow (one parent run, one child run per grid point) and summarised in a Markdown table.

    ablation:
      name: rec-bpr-size            # the MLflow experiment and the table's file name
      evaluation: rec               # rec | retrieval | explain | ab
      data: var/hm/catalog          # catalog or raw folder; --data overrides
      tracking_uri: sqlite:///var/mlflow/mlflow.db
      artifact_root: var/mlflow/artifacts
      out: var/ablations            # <out>/<name>.md and .json
      base: {modes: [item]}         # the evaluation's config (fields of its eval_* section)
      grid:                         # every combination is one run; dotted keys reach nested fields
        models.bpr.factors: [16, 64]
      points:                       # optional: listed settings, each combined with every grid point
        - {gallery: heldout, queries: heldout}
        - {gallery: all, queries: heldout}
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.runner import cell, get_evaluation, md_table, write_outputs
from eval.tracking import DEFAULT_ARTIFACT_ROOT, DEFAULT_TRACKING_URI, Tracker, flat_params
from retrieval.artifacts import atomic_write_json, atomic_write_text
from retrieval.config import from_dict, load_yaml

log = logging.getLogger(__name__)


@dataclass
class AblationConfig:
    name: str
    evaluation: str
    data: str | None = None
    tracking_uri: str = DEFAULT_TRACKING_URI
    artifact_root: str = DEFAULT_ARTIFACT_ROOT
    out: str = "var/ablations"
    base: dict = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    points: list[dict] = field(default_factory=list)

    def __post_init__(self):
        get_evaluation(self.evaluation)
        if not all(isinstance(p, dict) for p in self.points):
            raise ValueError("ablation points must be mappings of (dotted) config keys to values")
        for k, v in self.grid.items():
            if not isinstance(v, list) or not v:
                raise ValueError(f"ablation grid entry {k!r} must be a non-empty list of values")


def set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))] or [{}]


def _as_dict(obj) -> dict:
    """A config dataclass as a plain dict (nested dataclasses too)."""
    return dataclasses.asdict(obj)


def build_config(config_cls: type, base: dict, point: dict[str, Any]):
    """Defaults <- base <- grid point (dotted keys), validated by the config dataclass."""
    d = _as_dict(from_dict(config_cls, copy.deepcopy(base), "ablation.base"))
    for k, v in point.items():
        set_dotted(d, k, copy.deepcopy(v))
    return from_dict(config_cls, d, "ablation")


def run_ablation(config: str | Path | dict, data: str | None = None, tracking_uri: str | None = None, out: str | None = None,
                 artifact_root: str | None = None) -> dict[str, Any]:
    """Run every grid point; return {"experiment", "parent_run", "runs", "markdown", "table"}."""
    raw = config if isinstance(config, dict) else load_yaml(config)
    if "ablation" not in raw:
        raise ValueError("an ablation config needs an `ablation:` section")
    cfg = from_dict(AblationConfig, raw["ablation"], "ablation")
    data = data or cfg.data
    if not data:
        raise ValueError("no data path: set ablation.data or pass --data")
    if not Path(data).exists():
        raise FileNotFoundError(f"data path {data} does not exist")
    ev = get_evaluation(cfg.evaluation)
    points = [{**p, **g} for p in (cfg.points or [{}]) for g in grid_points(cfg.grid)]
    configs = [build_config(ev.config_cls, cfg.base, p) for p in points]  # validate all before running any
    tracker = Tracker(cfg.name, tracking_uri or cfg.tracking_uri, artifact_root or cfg.artifact_root)
    out_dir = Path(out or cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    parent = tracker.start(f"{cfg.name} ({len(points)} runs)", tags={"whyrec.evaluation": cfg.evaluation})
    runs, rows = [], []
    t0 = time.time()
    try:
        tracker.log(parent, {"evaluation": cfg.evaluation, "data": data, "grid": json.dumps(cfg.grid), "base": json.dumps(cfg.base)})
        for i, (point, ecfg) in enumerate(zip(points, configs)):
            name = ", ".join(f"{k}={cell(v)}" for k, v in point.items()) or "base"
            log.info("ablation %s: run %d/%d: %s", cfg.name, i + 1, len(points), name)
            t = time.time()
            result = ev.run(data, ecfg)
            seconds = time.time() - t
            files = write_outputs(ev, result, out_dir / cfg.name / f"run{i:02d}")
            params = {**flat_params(_as_dict(ecfg)), **{f"grid.{k}": json.dumps(v) for k, v in point.items()}, "data": data}
            metrics = {**ev.metrics(result), "run_seconds": seconds}
            run_id = tracker.log_run(name, params, metrics, files, parent=parent)
            runs.append({"run_id": run_id, "point": point, "seconds": round(seconds, 1)})
            for row in ev.rows(result):
                rows.append({**{k: v for k, v in point.items()}, **row})
        md = (f"# Ablation `{cfg.name}` ({cfg.evaluation} on {data})\n\n{len(points)} runs, MLflow experiment `{cfg.name}` "
              f"at {tracker.tracking_uri}; bootstrap 95% intervals in brackets.\n\n" + md_table(rows))
        md_path = out_dir / f"{cfg.name}.md"
        atomic_write_text(md_path, md)
        json_path = out_dir / f"{cfg.name}.json"
        atomic_write_json(json_path, {"runs": runs, "rows": rows}, indent=1, default=str)
        tracker.log(parent, metrics={"runs": len(points), "wall_s": time.time() - t0}, artifacts=[md_path, json_path])
        tracker.end(parent)
    except BaseException:
        tracker.end(parent, "FAILED")
        raise
    return {"experiment": cfg.name, "experiment_id": tracker.experiment_id, "tracking_uri": tracker.tracking_uri,
            "parent_run": parent, "runs": runs, "markdown": str(md_path), "wall_s": round(time.time() - t0, 1)}
