"""`whyrec ablate` against a real sqlite-backed MLflow store in a temporary folder."""
import json

import pytest
import yaml

from api.cli import main
from eval.ablate import AblationConfig, build_config, grid_points, run_ablation, set_dotted
from eval.rec_eval import RecEvalConfig, recommend_section


def test_grid_and_dotted_overrides():
    assert grid_points({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert grid_points({}) == [{}]
    d = {}
    set_dotted(d, "models.bpr.factors", 8)
    assert d == {"models": {"bpr": {"factors": 8}}}
    cfg = build_config(RecEvalConfig, {"modes": ["item"]}, {"recommend.models.bpr.factors": 8, "weeks": 2})
    assert cfg.recommend == {"models": {"bpr": {"factors": 8}}} and cfg.weeks == 2 and cfg.modes == ["item"]
    rc = recommend_section(cfg)
    assert rc.models["bpr"] == {"kind": "bpr", "factors": 8}
    assert rc.models["tfidf"] == {"kind": "tfidf"} and rc.model == "ranker"  # untouched defaults stay
    with pytest.raises(ValueError):
        build_config(RecEvalConfig, {"modez": ["item"]}, {})
    with pytest.raises(ValueError):
        AblationConfig(name="x", evaluation="nope")
    with pytest.raises(ValueError):
        AblationConfig(name="x", evaluation="rec", grid={"seed": 3})
    with pytest.raises(ValueError):
        AblationConfig(name="x", evaluation="rec", points=["seed=3"])


@pytest.mark.slow
def test_ablation_logs_to_real_mlflow(tmp_path, synth_catalog):
    from mlflow.tracking import MlflowClient

    synth_catalog.save(tmp_path / "cat")
    conf = {"ablation": {
        "name": "tiny-rec", "evaluation": "rec", "data": str(tmp_path / "cat"),
        "tracking_uri": f"sqlite:///{tmp_path}/ml/mlflow.db", "artifact_root": str(tmp_path / "ml" / "artifacts"),
        "out": str(tmp_path / "out"),
        "base": {"modes": ["item"], "bootstrap": 50, "latency_users": 3, "models": ["popularity", "repeat", "bpr", "hybrid"],
                 "recommend": {"model": "hybrid", "item_vectors": None,
                               "models": {"popularity": {"kind": "popularity"}, "repeat": {"kind": "repeat"},
                                          "bpr": {"kind": "bpr", "factors": 4, "iterations": 2},
                                          "hybrid": {"kind": "hybrid", "weights": {"repeat": 1.0, "bpr": 0.5}}}}},
        "grid": {"exclude_bought": [[False], [True]]},
        "points": [{"seed": 0}],
    }}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(conf))
    assert main(["ablate", str(path)]) == 0
    client = MlflowClient(conf["ablation"]["tracking_uri"])
    exp = client.get_experiment_by_name("tiny-rec")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(children) == 2 and len(parents) == 1
    assert {r.data.params["grid.exclude_bought"] for r in children} == {"[false]", "[true]"}
    for r in children:
        assert r.info.status == "FINISHED"
        assert r.data.params["recommend.models.bpr.factors"] == "4"
        m = r.data.metrics
        table = "without_bought" if r.data.params["grid.exclude_bought"] == "[true]" else "with_bought"
        assert 0 <= m[f"item/{table}/repeat/ndcg_at_10"] <= 1
        assert m[f"item/{table}/repeat/ndcg_at_10/low"] <= m[f"item/{table}/repeat/ndcg_at_10"]
        arts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"recall_at_k_item.png", "latency_item.png", "result.json", "tables.md"} <= arts
    # the repeat baseline cannot find re-bought items once bought items are removed
    by = {r.data.params["grid.exclude_bought"]: r.data.metrics for r in children}
    assert by["[true]"]["item/without_bought/repeat/ndcg_at_10"] < by["[false]"]["item/with_bought/repeat/ndcg_at_10"]
    md = (tmp_path / "out" / "tiny-rec.md").read_text()
    assert md.count("| [true] | item | without_bought |") == 4  # popularity, repeat, bpr, hybrid
    assert "tiny-rec.md" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    # the PNGs are real images
    local = client.download_artifacts(children[0].info.run_id, "recall_at_k_item.png", str(tmp_path / "dl"))
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_errors(tmp_path, capsys):
    assert main(["eval", "rec", str(tmp_path / "missing"), "--no-mlflow"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("ablation: {name: x, evaluation: rec}\n")
    assert main(["ablate", str(bad)]) == 2
    assert "no data path" in capsys.readouterr().err


def test_shipped_ablation_configs_are_valid():
    """Every configs/ablations/*.yaml names a known evaluation and builds a valid config per grid point."""
    from pathlib import Path

    from eval.runner import get_evaluation
    from retrieval.config import from_dict, load_yaml

    files = sorted(Path("configs/ablations").glob("*.yaml"))
    assert files
    for f in files:
        cfg = from_dict(AblationConfig, load_yaml(f)["ablation"], f.name)
        ev = get_evaluation(cfg.evaluation)
        for p in cfg.points or [{}]:
            for point in grid_points(cfg.grid):
                build_config(ev.config_cls, cfg.base, {**p, **point})


def test_eval_config_sections_are_valid():
    from eval.runner import EVALUATIONS
    from retrieval.config import section

    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "eval.yaml"
    for ev in EVALUATIONS.values():  # unknown keys raise; every section must build its config class
        assert isinstance(section(path, ev.section, ev.config_cls), ev.config_cls)
