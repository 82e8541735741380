"""MLflow logging for evaluations: a local sqlite-backed store, runs with params, metrics, PNG plots.

The default store is `sqlite:///var/mlflow/mlflow.db` with artifacts under var/mlflow/artifacts;
`mlflow ui --backend-store-uri sqlite:///var/mlflow/mlflow.db` shows it. An explicit `MlflowClient`
is used (no global fluent state), so a library call never changes a caller's active run.
"""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///var/mlflow/mlflow.db"
DEFAULT_ARTIFACT_ROOT = "var/mlflow/artifacts"
_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")


def metric_key(name: str) -> str:
    """An MLflow-safe metric/param key: `ndcg@10` -> `ndcg_at_10`."""
    return _BAD.sub("_", name.replace("@", "_at_"))


def _flatten(prefix: str, d: Any, out: dict[str, Any]) -> None:
    if isinstance(d, dict):
        for k, v in d.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = d


def flat_params(config: dict) -> dict[str, str]:
    """Nested config -> {dotted.key: value as text} for MLflow params."""
    out: dict[str, Any] = {}
    _flatten("", config, out)
    return {metric_key(k): json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in out.items()}


class Tracker:
    """One MLflow experiment in a (sqlite) store; `log_run` records one evaluation."""

    def __init__(self, experiment: str, tracking_uri: str = DEFAULT_TRACKING_URI, artifact_root: str | Path = DEFAULT_ARTIFACT_ROOT):
        from mlflow.tracking import MlflowClient

        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = (Path(artifact_root).resolve() / metric_key(experiment).replace(" ", "_")).as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        self.experiment = experiment

    def start(self, name: str, parent: str | None = None, tags: dict[str, str] | None = None) -> str:
        tags = dict(tags or {})
        if parent:
            tags["mlflow.parentRunId"] = parent
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def log(self, run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
            artifacts: Iterable[str | Path] = ()) -> None:
        from mlflow.entities import Metric, Param

        params = {metric_key(k): str(v)[:6000] for k, v in (params or {}).items()}
        clean = {metric_key(k): float(v) for k, v in (metrics or {}).items()
                 if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))}
        ps = [Param(k, v) for k, v in params.items()]
        ms = [Metric(k, v, 0, 0) for k, v in clean.items()]
        for i in range(0, max(len(ps), len(ms)), 100):  # MLflow batch limits
            self.client.log_batch(run_id, metrics=ms[i : i + 100], params=ps[i : i + 100])
        for a in artifacts:
            self.client.log_artifact(run_id, str(a))

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def log_run(self, name: str, params: dict, metrics: dict, artifacts: Iterable[str | Path] = (), parent: str | None = None) -> str:
        run_id = self.start(name, parent)
        try:
            self.log(run_id, params, metrics, artifacts)
        except Exception:
            self.end(run_id, "FAILED")
            raise
        self.end(run_id)
        return run_id
