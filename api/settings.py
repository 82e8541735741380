"""The service's one `Settings`: the `serve:` section of a whyrec YAML config, overridden by
WHYREC_* environment variables, overridden by keyword arguments. Read once at start-up.

The same YAML file also feeds the searcher (`catalog:`, `encoder:`, `index:` sections), so a
deployment points at one file: `whyrec serve --config configs/hm.yaml` or WHYREC_CONFIG=...
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from api.schemas import HISTORY_MAX, K_MAX
from retrieval.config import load_yaml

SECTION = "serve"


class Settings(BaseSettings):
    """Everything the HTTP service needs; defaults suit a laptop demo."""

    model_config = SettingsConfigDict(env_prefix="WHYREC_", extra="forbid", validate_default=True)

    config: Path | None = Field(None, description="whyrec YAML config: its serve: section fills these settings, "
                                                   "the rest (catalog, encoder, index) builds the searcher")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    explainer: str = Field("grounded", description="explanation backend: grounded | llava (when registered)")
    explainer_options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the explainer factory")
    explain_cache_size: int = Field(4096, ge=0, description="LRU entries of (request, item, backend) -> rationale")
    admin_key: SecretStr | None = Field(None, description="API key for /admin/reload; unset = admin disabled")
    default_k: int = Field(12, ge=1, le=K_MAX, description=f"results when a request gives no k (at most {K_MAX})")
    history_used: int = Field(50, ge=1, le=HISTORY_MAX, description="a shopper's most recent purchases that shape their vector")
    explain_history: int = Field(5, ge=0, le=50, description="purchases (the most alike) an explanation may point at, per item")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="larger request bodies get 413")
    max_image_pixels: int = Field(40_000_000, ge=1, description="larger images (decompression bombs) get 400")
    chat_k: int = Field(5, ge=1, le=50, description="products a chat answer names")
    chat_model: str = "whyrec"
    threads: int = Field(1, ge=1, description="torch/faiss threads per request (one beats two on 2 cores)")
    llava_concurrency: int = Field(1, ge=1, description="llava generate calls running at once in the process (each is one "
                                                         "batched call for a whole response; more queue); the rest of a "
                                                         "request never waits for it")
    llava_live_items: int = Field(0, ge=0, le=K_MAX, description="items per response the llava explainer may generate live "
                                                                 "when the offline item-text cache lacks them (the others "
                                                                 "get the grounded rationale, with the reason)")
    warmup: bool = Field(True, description="load the text and image towers before serving (and before a reload swaps)")
    users_listed: int = Field(50, ge=0, description="shoppers offered by GET /users (the web page's selector)")
    static_dir: Path = Field(Path(__file__).parent / "static", description="the web page's files")
    log_level: str = "info"

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # keyword arguments > WHYREC_* environment > the YAML file's serve: section > defaults
        return init_settings, env_settings, YamlServeSource(settings_cls, init_settings, env_settings)

    @property
    def admin_enabled(self) -> bool:
        return self.admin_key is not None and bool(self.admin_key.get_secret_value())


class YamlServeSource(PydanticBaseSettingsSource):
    """The `serve:` section of the config file named by `config` (keyword or WHYREC_CONFIG),
    read through retrieval.config.load_yaml so ${VAR} expansion works as everywhere else."""

    def __init__(self, settings_cls, init_settings, env_settings):
        super().__init__(settings_cls)
        self._init = init_settings
        self._env = env_settings

    def _config_path(self) -> Any:
        for source in (self._init, self._env):
            value = source().get("config")
            if value:
                return value
        return None

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = self._config_path()
        if not path:
            return {}
        data = load_yaml(path).get(SECTION) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the {SECTION}: section must be a mapping")
        unknown = set(data) - set(self.settings_cls.model_fields) - {"config"}
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} in {path} {SECTION}: section; "
                             f"known: {sorted(self.settings_cls.model_fields)}")
        data = dict(data)
        data.setdefault("config", str(path))
        if "static_dir" in data:  # relative to the working directory, like every other path in a config
            data["static_dir"] = str(Path(data["static_dir"]))
        return data


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from a config file (or WHYREC_CONFIG) plus non-None overrides."""
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    if config is not None:
        kwargs["config"] = config
    return Settings(**kwargs)
