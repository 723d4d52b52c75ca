"""One typed settings object, read from environment variables.

Names follow label-studio-ml-backend's conventions (PORT, BASIC_AUTH_USER, LABEL_STUDIO_URL, ...), so
a deployment that ran one of those backends keeps its environment. Every field is listed in the README.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.llm.cost import Price, parse_prices, price_for


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    host: str = "0.0.0.0"
    port: int = 9090
    web_workers: int = Field(2, description="gunicorn worker processes")
    log_level: str = "INFO"

    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    webhook_secret: str | None = Field(
        None, description="shared secret accepted on /webhook in the X-Webhook-Secret header"
    )

    label_studio_url: str | None = None
    label_studio_api_key: str | None = None

    data_dir: Path = Path("data")
    model_dir: Path | None = None
    keep_model_versions: int = 5

    redis_url: str | None = None
    queue_name: str = "lsal"

    llm_base_url: str | None = Field(None, description="OpenAI-compatible endpoint; unset: the embedded local model")
    llm_api_key: str = "not-needed"
    llm_model: str = "smollm2-135m"
    llm_concurrency: int = 2
    llm_timeout: float = 60.0
    llm_budget_usd: float | None = Field(None, description="LLM spending limit per project, USD; unset: none")
    llm_prices: str = Field("", description='extra prices, "model=input/output,..." in USD per 1M tokens')

    min_annotations: int = Field(10, description="labelled tasks needed before the first training")
    train_job_timeout: int = 1800
    ls_page_size: int = 500

    @field_validator(
        "basic_auth_user",
        "basic_auth_pass",
        "webhook_secret",
        "redis_url",
        "label_studio_url",
        "label_studio_api_key",
        "llm_base_url",
        "llm_budget_usd",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def models_path(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.data_dir / "models"

    @property
    def embedded_redis_path(self) -> Path:
        return self.data_dir / "redis"

    @property
    def llm_is_local(self) -> bool:
        """No endpoint configured: the embedded llama.cpp server, which costs nothing per token."""
        return self.llm_base_url is None

    def llm_price(self) -> Price:
        return price_for(self.llm_model, parse_prices(self.llm_prices), local=self.llm_is_local)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
