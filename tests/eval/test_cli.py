"""`whyrec eval ...` end to end on the synthetic catalog (MLflow off here; test_ablate uses a real store)."""
import json

import pytest

from api.cli import main


@pytest.fixture(scope="module")
def cat(synth_catalog, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "cat"
    synth_catalog.save(path)
    return path


def run(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out


def test_eval_ab(cat, tmp_path, capsys):
    rc, out = run(capsys, ["eval", "ab", str(cat), "--a", "repeat", "--b", "popularity", "--sessions", "3000", "--bootstrap", "100",
                           "--no-mlflow", "--out", str(tmp_path / "ab")])
    assert rc == 0, out.err
    res = json.loads(out.out)
    assert res["a"] == "repeat" and res["ab_split"]["lift"]["high"] < 0  # popularity is far worse here
    assert (tmp_path / "ab" / "ab_lift.png").exists() and (tmp_path / "ab" / "tables.md").exists()


def test_eval_rec_quick(cat, tmp_path, capsys):
    rc, out = run(capsys, ["eval", "rec", str(cat), "--modes", "item", "--exclude-bought", "yes", "--models", "popularity", "repeat",
                           "--bootstrap", "50", "--no-mlflow", "--out", str(tmp_path / "rec")])
    assert rc == 0, out.err
    res = json.loads(out.out)
    assert set(res["modes"]["item"]["tables"]) == {"without_bought"}
    assert set(res["modes"]["item"]["tables"]["without_bought"]["all"]) == {"popularity", "repeat"}
    rc, out = run(capsys, ["eval", "rec", str(cat), "--models", "nope", "--no-mlflow", "--out", str(tmp_path / "x")])
    assert rc == 2 and "unknown model" in out.err


def test_eval_explain_from_file(cat, tmp_path, capsys):
    f = tmp_path / "grounded.jsonl"
    f.write_text(json.dumps({"item_id": "000b", "text": "A black dress in soft viscose.", "reference": "A flowing black dress."}) + "\n")
    rc, out = run(capsys, ["eval", "explain", str(cat), "--explanations", str(f), "--no-grounding", "--bootstrap", "20",
                           "--no-mlflow", "--out", str(tmp_path / "ex")])
    assert rc == 0, out.err
    res = json.loads(out.out)
    assert res["grounded"]["n"] == 1 and res["grounded"]["rouge1"]["mean"] > 0.3
    rc, out = run(capsys, ["eval", "explain", str(cat), "--no-mlflow"])
    assert rc == 2 and "--explanations" in out.err


def test_eval_retrieval_needs_an_encoder(cat, capsys):
    rc, out = run(capsys, ["eval", "retrieval", str(cat), "--no-mlflow"])
    assert rc == 2 and "needs an encoder" in out.err
