from dataclasses import dataclass, field

import pytest

from retrieval.config import load_yaml, section


@dataclass
class Inner:
    a: int = 1


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)


def test_section_builds_nested_dataclasses_and_applies_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("WHYREC_TEST_NAME", "from-env")
    monkeypatch.delenv("WHYREC_UNSET", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text("outer:\n  name: ${WHYREC_TEST_NAME}\n  inner: {a: 5}\nother:\n  name: ${WHYREC_UNSET:-fallback}\n")
    cfg = section(path, "outer", Outer)
    assert cfg == Outer("from-env", Inner(5))
    assert section(load_yaml(path), "other", Outer).name == "fallback"
    assert section(path, "outer", Outer, name="flag", inner=None).name == "flag"  # None overrides nothing
    assert section({}, "missing", Outer) == Outer()


def test_unknown_keys_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown config key.*nmae"):
        section({"outer": {"nmae": "typo"}}, "outer", Outer)
    with pytest.raises(FileNotFoundError):
        load_yaml(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["demo.yaml", "hm.yaml", "gpu-production.yaml"])
def test_shipped_configs_fill_every_retrieval_section(name):
    from pathlib import Path

    from retrieval.encoders import EncoderConfig
    from retrieval.search import CatalogConfig, IndexConfig, SearchConfig

    cfg = load_yaml(Path(__file__).resolve().parents[2] / "configs" / name)
    assert section(cfg, "catalog", CatalogConfig).dir
    assert section(cfg, "encoder", EncoderConfig).name in ("lit", "openclip")
    assert section(cfg, "index", IndexConfig).params.nprobe > 0
    assert section(cfg, "search", SearchConfig).attribute_weight >= 0
