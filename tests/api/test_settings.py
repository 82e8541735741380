"""Settings: YAML serve: section < WHYREC_* environment < keyword arguments; typos are errors."""
import pytest
from pydantic import ValidationError

from api.schemas import K_MAX
from api.settings import Settings, load_settings


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("catalog: {path: var/x}\nserve:\n  port: 9001\n  default_k: 7\n  admin_key: from-yaml\n")
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("WHYREC_"):
            monkeypatch.delenv(name)


def test_yaml_section_fills_settings(config):
    s = load_settings(config)
    assert (s.port, s.default_k, s.admin_key.get_secret_value()) == (9001, 7, "from-yaml")
    assert s.config == config and s.admin_enabled


def test_env_overrides_yaml_and_kwargs_override_env(config, monkeypatch):
    monkeypatch.setenv("WHYREC_PORT", "9100")
    monkeypatch.setenv("WHYREC_EXPLAINER_OPTIONS", '{"style": "short"}')
    s = load_settings(config)
    assert s.port == 9100 and s.default_k == 7 and s.explainer_options == {"style": "short"}
    assert load_settings(config, port=5).port == 5


def test_config_path_from_environment(config, monkeypatch):
    monkeypatch.setenv("WHYREC_CONFIG", str(config))
    assert Settings().default_k == 7


def test_unknown_key_in_serve_section_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("serve:\n  prot: 8000\n")
    with pytest.raises(ValueError, match="prot"):
        load_settings(bad)


def test_invalid_values_rejected(config):
    with pytest.raises(ValidationError):
        load_settings(config, port=70000)
    with pytest.raises(ValidationError) as err:  # default_k above the API's own limit
        load_settings(config, default_k=K_MAX + 1)
    assert [(e["loc"], e["type"]) for e in err.value.errors()] == [(("default_k",), "less_than_equal")]
    assert load_settings(config, default_k=K_MAX).default_k == K_MAX


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.yaml")


def test_admin_disabled_without_key():
    assert not Settings().admin_enabled
    assert not Settings(admin_key="").admin_enabled


def test_repo_configs_have_valid_serve_sections():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for name in ("demo.yaml", "hm.yaml"):
        s = load_settings(root / "configs" / name)
        assert s.max_upload_bytes == 10 * 1024 * 1024
        # the shipped LLaVA serves by default; the adapter it names is in the repo (a fresh clone has it)
        assert s.explainer == "llava" and (root / s.explainer_options["model"] / "adapter_config.json").exists()
