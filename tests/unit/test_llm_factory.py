"""The LLM client factory: settings -> endpoint, model, key, limits and structured-output styles, per role."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from backend.llm.cache import DiskCache, RedisCache
from backend.llm.factory import EMBEDDED_FORMATS, embedded_llm_client, llm_client, llm_config
from backend.llm.prompts import FORMAT_STYLES
from backend.settings import Settings

EMBEDDED = "http://127.0.0.1:9091/v1"
HOSTED = "https://api.example/v1"


def settings(**fields: object) -> Settings:
    base: dict[str, object] = {"llm_base_url": None, "llm_embedded_url": EMBEDDED, "llm_model": "qwen",
                               "llm_api_key": "cheap-key", "llm_timeout": 7.0, "llm_concurrency": 3,
                               "llm_job_wait_seconds": 11.0}  # fmt: skip
    return Settings(**(base | fields))  # type: ignore[arg-type]


def test_the_embedded_model_is_asked_in_its_own_json_object_style() -> None:
    config = llm_config(settings())
    assert config is not None
    assert (config.base_url, config.model, config.api_key) == (EMBEDDED, "qwen", "cheap-key")
    assert (config.timeout, config.concurrency, config.wait_budget) == (7.0, 3, 11.0)
    assert config.formats == EMBEDDED_FORMATS == ("json_object",)


def test_a_configured_endpoint_wins_over_the_embedded_one_and_tries_json_schema_first() -> None:
    config = llm_config(settings(llm_base_url=HOSTED, llm_model="gpt-4o-mini"))
    assert config is not None
    assert (config.base_url, config.model) == (HOSTED, "gpt-4o-mini")
    assert config.formats == FORMAT_STYLES == ("json_schema", "json_object")


def test_no_client_when_the_llm_is_off_or_has_no_endpoint() -> None:
    assert llm_client(settings(llm_enabled=False)) is None
    assert llm_client(settings(llm_embedded_url=None)) is None  # the embedded server has not started
    assert llm_client(settings(), role="strong") is None  # no LLM_STRONG_BASE_URL
    assert llm_client(settings(llm_enabled=False, llm_strong_base_url=HOSTED, llm_strong_model="big"),
                      role="strong") is None  # fmt: skip
    with pytest.raises(ValueError, match="unknown LLM role 'medium'"):
        llm_config(settings(), "medium")  # type: ignore[arg-type]


def test_the_strong_role_reads_the_llm_strong_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_STRONG_BASE_URL", HOSTED)
    monkeypatch.setenv("LLM_STRONG_MODEL", "gpt-4o")
    monkeypatch.setenv("LLM_STRONG_API_KEY", "strong-key")
    monkeypatch.setenv("LLM_CONCURRENCY", "5")
    strong = llm_config(Settings(llm_base_url=None, llm_embedded_url=EMBEDDED), "strong")
    cheap = llm_config(Settings(llm_base_url=None, llm_embedded_url=EMBEDDED), "cheap")
    assert strong is not None and cheap is not None
    assert (strong.base_url, strong.model, strong.api_key) == (HOSTED, "gpt-4o", "strong-key")
    assert strong.concurrency == cheap.concurrency == 5
    assert strong.formats == FORMAT_STYLES  # json_schema first, as before: it falls back on the first refusal
    assert cheap.base_url == EMBEDDED and cheap.api_key != "strong-key"


def test_overrides_win_over_the_settings() -> None:
    config = llm_config(settings(), concurrency=1, wait_budget=None, max_retries=0, samples=3)
    assert config is not None
    assert (config.concurrency, config.wait_budget, config.max_retries, config.samples) == (1, None, 0, 3)
    assert config.timeout == 7.0 and config.model == "qwen"


def test_answers_are_cached_in_redis_when_a_connection_is_given(tmp_path: Path) -> None:
    conn = object()
    client = llm_client(settings(), conn)
    assert client is not None and isinstance(client.cache, RedisCache) and client.cache.conn is conn
    disk = DiskCache(tmp_path / "cache.json")
    client = llm_client(settings(), conn, cache=disk)
    assert client is not None and client.cache is disk
    client = llm_client(settings())
    assert client is not None and client.cache is None


def test_the_client_runs_llm_concurrency_requests_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CONCURRENCY", "3")
    client = llm_client(Settings(llm_base_url=HOSTED))
    assert client is not None and client.config.concurrency == 3
    items = list(range(6))
    peak = in_flight = started = 0
    held = threading.Condition()

    def call(item: int) -> int:
        nonlocal peak, in_flight, started
        with held:
            started += 1
            in_flight += 1
            peak = max(peak, in_flight)
            held.notify_all()
            held.wait_for(lambda: in_flight >= 3 or started == len(items), timeout=5)
        time.sleep(0.05)  # held a moment longer: a fourth call sent beside these would raise the peak
        with held:
            in_flight -= 1
        return item

    assert client.transport.map(call, items) == items
    assert peak == 3


def test_a_bench_client_for_an_embedded_server_has_no_wait_budget_and_takes_overrides() -> None:
    client = embedded_llm_client(EMBEDDED, "smollm2-135m", timeout=120, max_retries=1, concurrency=2)
    assert (client.config.base_url, client.config.model, client.config.formats) == (
        EMBEDDED,
        "smollm2-135m",
        ("json_object",),
    )
    assert (client.config.timeout, client.config.max_retries, client.config.concurrency) == (120, 1, 2)
    assert client.config.wait_budget is None and client.cache is None
