"""One typed settings object, read from environment variables.

Names follow label-studio-ml-backend's conventions (PORT, BASIC_AUTH_USER, LABEL_STUDIO_URL, ...), so
a deployment that ran one of those backends keeps its environment. Every field is listed in the README.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.llm.cost import Price, parse_prices, price_for
from backend.llm.local import DEFAULT_LOCAL_MODEL
from backend.llm.scoring import MultiLabelScoring
from backend.student.encoder import NO_ENCODER, EncoderUnavailable, check_available


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    host: str = "0.0.0.0"
    port: int = 9090
    web_workers: int = Field(2, description="gunicorn worker processes")
    log_level: str = "INFO"
    max_request_mb: float = Field(20.0, gt=0, description="largest request body; larger ones get 413")
    max_label_config_kb: int = Field(1024, gt=0, description="largest label config; larger ones get 413")
    label_config_cache_mb: int = Field(32, gt=0, description="memory for parsed label configs per server process")

    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    webhook_secret: str | None = Field(
        None, description="shared secret accepted on /webhook in the X-Webhook-Secret header"
    )

    label_studio_url: str | None = None
    label_studio_api_key: str | None = None
    lsal_backend_url: str | None = Field(None, description="the backend's URL, for lsal-ops connect and status")

    data_dir: Path = Path("data")
    model_dir: Path | None = None
    keep_model_versions: int = 5

    redis_url: str | None = None
    queue_name: str = "lsal"

    llm_enabled: bool = Field(True, description="pre-annotate and cold-start with the LLM")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible endpoint; unset: the embedded local model")
    # set by `lsal run` for its children once it has started the embedded model; not for users
    llm_embedded_url: str | None = None
    llm_local_venv: Path = Field(
        Path.home() / ".cache" / "lsal" / "llm-server",
        description="virtualenv with llama-cpp-python[server] and the model's package",
    )
    llm_local_port: int = 9091
    llm_api_key: str = "not-needed"
    llm_model: str = Field(DEFAULT_LOCAL_MODEL, description="the model name the endpoint expects")
    llm_concurrency: int = 2
    llm_timeout: float = 60.0
    llm_job_wait_seconds: float = Field(
        300.0, gt=0, description="seconds an LLM job may spend in all on requests that fail or hang, then it stops"
    )
    llm_strong_base_url: str | None = Field(
        None, description="a second, costlier OpenAI-compatible endpoint: the cascade's last stage; unset: none"
    )
    llm_strong_model: str | None = Field(None, description="the model name the strong endpoint expects")
    llm_strong_api_key: str = "not-needed"
    llm_budget_usd: float | None = Field(None, description="LLM spending limit per project, USD; unset: none")
    llm_prices: str = Field("", description='extra prices, "model=input/output,..." in USD per 1M tokens')
    llm_few_shot: int = Field(4, description="human-labelled examples per prompt")
    llm_multilabel_scoring: MultiLabelScoring = Field(
        "json", description="multi-label answers: one JSON answer, or yesno: a yes/no question per label (logprobs)"
    )
    llm_seed_size: int = Field(30, description="tasks the LLM labels for the student before any human label")
    llm_label_weight: float = Field(0.3, description="weight of an LLM seed label in training (a human's is 1)")
    llm_batch_size: int = Field(20, description="tasks per LLM batch: budget check, progress and push to LS")
    auto_accept_precision: float = Field(0.95, description="precision auto-accepted pre-labels must reach")

    queue_enabled: bool = Field(True, description="rank the pool after each retraining and make LS serve it")
    queue_strategy: str = Field("margin", description="the query strategy (backend.selection.strategies)")
    queue_size: int = Field(50, description="tasks published to LS per ranking")
    label_budget: int | None = Field(None, description="stop signal: human labels to spend in all")
    total_budget_usd: float | None = Field(None, description="stop signal: human plus LLM dollars in all")
    human_cost_per_label: float = Field(0.10, description="USD an annotator's label costs, for cost-aware stopping")

    min_annotations: int = Field(10, description="labelled tasks needed before the first training")
    student_encoder: Literal["minilm", "none"] = Field(
        "minilm", description="sentence encoder whose embeddings join the student's TF-IDF features"
    )
    student_finetune: Literal["auto", "never", "always"] = Field(
        "auto",
        description="fine-tune the encoder after the fast student (auto: from FINETUNE_MIN_LABELS to "
        "FINETUNE_MAX_LABELS single-label labels, published only when it wins on held-out labels)",
    )
    finetune_min_labels: int = Field(200, ge=10, description="human labels before STUDENT_FINETUNE=auto fine-tunes")
    finetune_max_labels: int = Field(2000, ge=10, description="human labels past which auto stops fine-tuning")
    train_job_timeout: int = 1800
    llm_job_timeout: int = Field(6 * 3600, description="seconds before a pre-annotation job is stopped")
    ls_page_size: int = 500

    @field_validator(
        "basic_auth_user",
        "basic_auth_pass",
        "webhook_secret",
        "redis_url",
        "label_studio_url",
        "label_studio_api_key",
        "lsal_backend_url",
        "llm_base_url",
        "llm_embedded_url",
        "llm_strong_base_url",
        "llm_strong_model",
        "llm_budget_usd",
        "label_budget",
        "total_budget_usd",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _auth_is_all_or_nothing(self) -> Settings:
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            given, missing = ("BASIC_AUTH_USER", "BASIC_AUTH_PASS") if self.basic_auth_user else (
                "BASIC_AUTH_PASS", "BASIC_AUTH_USER")  # fmt: skip
            raise ValueError(f"{given} is set but {missing} is not: set both for basic auth, or neither")
        return self

    @field_validator("queue_strategy")
    @classmethod
    def _strategy_exists(cls, value: str) -> str:
        from backend.selection.strategies import STRATEGIES  # numpy and scikit-learn: only when validating

        if value not in STRATEGIES:
            dropped = " (llm_informativeness was dropped: see README, Strategies)" if value == "llm_informativeness" \
                else ""  # fmt: skip
            raise ValueError(f"unknown query strategy {value!r}{dropped}; known: {', '.join(STRATEGIES)}")
        return value

    @model_validator(mode="after")
    def _encoder_is_installed(self) -> Settings:
        if self.student_encoder != NO_ENCODER:
            try:
                check_available(self.student_encoder)
            except EncoderUnavailable as exc:
                raise ValueError(str(exc)) from None
        elif self.student_finetune == "always":
            raise ValueError("STUDENT_FINETUNE=always fine-tunes the student's encoder, and STUDENT_ENCODER=none "
                             "names none: set STUDENT_ENCODER=minilm")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _finetune_range(self) -> Settings:
        if self.finetune_min_labels > self.finetune_max_labels:
            raise ValueError(f"FINETUNE_MIN_LABELS ({self.finetune_min_labels}) is above FINETUNE_MAX_LABELS "
                             f"({self.finetune_max_labels})")  # fmt: skip
        return self

    @property
    def finetune_queue_name(self) -> str:
        """Fine-tuning jobs wait here: workers take them only when the main queue is empty."""
        return f"{self.queue_name}-finetune"

    @model_validator(mode="after")
    def _strong_endpoint_names_its_model(self) -> Settings:
        if self.llm_strong_base_url and not self.llm_strong_model:
            raise ValueError("LLM_STRONG_BASE_URL is set but LLM_STRONG_MODEL is not: name the strong model")
        return self

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

    @property
    def llm_url(self) -> str | None:
        """The endpoint LLM calls go to: the configured one, else the embedded server once started."""
        return self.llm_base_url or self.llm_embedded_url

    def llm_price(self) -> Price:
        return price_for(self.llm_model, parse_prices(self.llm_prices), local=self.llm_is_local)

    def llm_strong_price(self) -> Price:
        """The strong model's price: always from the table (a self-hosted one is priced 0/0 in LLM_PRICES)."""
        return price_for(self.llm_strong_model or "", parse_prices(self.llm_prices))

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_error(exc: ValidationError) -> str:
    """One line for a person: which variables are wrong and why."""
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"]).upper()
        parts.append(f"{where}: {message}" if where else message)
    return "invalid settings: " + "; ".join(parts)
