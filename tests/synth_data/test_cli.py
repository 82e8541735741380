"""`whyrec synth generate`, `whyrec synth check` and `whyrec explain` on the fixture catalog."""
from __future__ import annotations

import json

import pytest

from api.cli import main


@pytest.fixture(scope="module")
def catalog_dir(catalog, tmp_path_factory):
    return str(catalog.save(tmp_path_factory.mktemp("cat") / "catalog"))


def test_synth_generate(catalog_dir, tmp_path, capsys):
    out = tmp_path / "data"
    rc = main(["synth", "generate", "--backend", "template", "-n", "25", "--catalog", catalog_dir, "--out", str(out),
               "--seed", "3", "--kinds", "rationale=1,comparison=1", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["accepted"] == 25 and set(report["kinds"]) == {"rationale", "comparison"}
    lines = [json.loads(l) for s in ("train", "val") for l in (out / f"{s}.llava.jsonl").open()]
    assert len(lines) == 25 and all(l["conversations"][0]["value"].startswith("<image>\n") for l in lines)


def test_synth_generate_bad_input(catalog_dir, tmp_path, capsys):
    assert main(["synth", "generate", "--catalog", str(tmp_path / "none"), "-n", "3", "--out", str(tmp_path)]) == 2
    assert "no catalog" in capsys.readouterr().err
    assert main(["synth", "generate", "--catalog", catalog_dir, "-n", "3", "--out", str(tmp_path), "--kinds", "poems=1"]) == 2
    assert "unknown example kind" in capsys.readouterr().err


def test_synth_check(catalog_dir, capsys):
    assert main(["synth", "check", "Navy wool jumper for men.", "009", "--catalog", catalog_dir]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["synth", "check", "A red jumper.", "009", "--catalog", catalog_dir]) == 1
    assert json.loads(capsys.readouterr().out)["contradicted"][0]["value"] == "red"


def test_explain_json(catalog_dir, capsys):
    rc = main(["explain", "something black for the gym, not too tight", "001", "--catalog", catalog_dir, "--json",
               "--history", "006", "--score", "0.7"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["backend"] == "grounded" and out["item_id"] == "001"
    assert "black" in out["text"] and "colour: black" in out["facts_used"] and out["grounding"]["ok"]
    assert any(f.startswith("history: 006") for f in out["facts_used"])
    assert out["evidence"]["score"] == 0.7 and "0.7" not in out["text"]  # the score is evidence, not shopper text
    assert main(["explain", "a red dress", "005", "--catalog", catalog_dir]) == 0
    text = capsys.readouterr().out.strip()
    assert "red" in text and not text.startswith("{")


def test_explain_errors(catalog_dir, capsys):
    assert main(["explain", "x", "nope", "--catalog", catalog_dir]) == 2
    assert "not in the catalog" in capsys.readouterr().err
    assert main(["explain", "x", "001", "--catalog", catalog_dir, "--backend", "nope"]) == 2
    assert "unknown explainer" in capsys.readouterr().err


def test_catalog_from_a_config_file(catalog_dir, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"catalog:\n  dir: {catalog_dir}\n")
    assert main(["explain", "a red dress", "005", "--config", str(cfg)]) == 0
    assert "red" in capsys.readouterr().out
    from synth_data.config import load_config

    assert load_config(cfg).catalog == catalog_dir
    assert load_config(cfg, catalog="elsewhere").catalog == "elsewhere"


def test_synth_generate_openai_backend_from_flags(catalog_dir, tmp_path, capsys, monkeypatch):
    from tests.synth_data.test_openai import FakeChat, answer_by_item

    monkeypatch.setenv("WHYREC_CLI_KEY", "sk-cli")
    with FakeChat(answer_by_item) as srv:
        args = ["synth", "generate", "--backend", "openai", "-n", "5", "--catalog", catalog_dir, "--out", str(tmp_path / "o"),
                "--base-url", srv.url, "--model", "cli-model", "--api-key-env", "WHYREC_CLI_KEY", "--concurrency", "2",
                "--cache-dir", str(tmp_path / "cache"), "--kinds", "question=1", "--no-progress"]
        assert main(args) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["backend"] == "openai" and report["accepted"] == 5
        assert srv.requests and {r["body"]["model"] for r in srv.requests} == {"cli-model"}
        assert {r["auth"] for r in srv.requests} == {"Bearer sk-cli"}
        assert report["generator"]["requests"] == len(srv.requests)
