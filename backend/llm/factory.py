"""The one place LLM clients are built: from the typed settings (the jobs, `lsal-ops generate`), or for an
embedded llama.cpp server a bench started itself. Callers pass what they change as LLMConfig overrides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from backend.llm.cache import RedisCache
from backend.llm.client import LLMClient, LLMConfig
from backend.llm.prompts import FORMAT_STYLES
from backend.llm.transport import Cache

if TYPE_CHECKING:
    from backend.settings import Settings

Role = Literal["cheap", "strong"]
# llama-cpp-python's server takes a schema only in its own json_object shape
EMBEDDED_FORMATS = ("json_object",)


def llm_config(settings: Settings, role: Role = "cheap", **overrides: Any) -> LLMConfig | None:
    """The role's endpoint, model and key with the settings' timeout, concurrency and job wait budget, then
    `overrides`; None when the LLM is off or the role has no endpoint.

    "cheap": LLM_BASE_URL, else the embedded server once started (LLM_MODEL, LLM_API_KEY); "strong": the
    cascade's LLM_STRONG_BASE_URL (LLM_STRONG_MODEL, LLM_STRONG_API_KEY), which tries json_schema first
    even when it is the embedded server (it falls back to json_object on the first refusal)."""
    if not settings.llm_enabled:
        return None
    if role == "cheap":
        url, model, key = settings.llm_url, settings.llm_model, settings.llm_api_key
        formats = EMBEDDED_FORMATS if settings.llm_is_local else FORMAT_STYLES
    elif role == "strong":
        url, model, key = settings.llm_strong_base_url, settings.llm_strong_model, settings.llm_strong_api_key
        formats = FORMAT_STYLES
    else:
        raise ValueError(f"unknown LLM role {role!r}: cheap or strong")
    if url is None or model is None:
        return None
    fields: dict[str, Any] = {
        "base_url": url,
        "model": model,
        "api_key": key,
        "timeout": settings.llm_timeout,
        "wait_budget": settings.llm_job_wait_seconds,
        "concurrency": settings.llm_concurrency,
        "formats": formats,
    }
    return LLMConfig(**(fields | overrides))


def llm_client(
    settings: Settings, conn: Any = None, role: Role = "cheap", *, cache: Cache | None = None, **overrides: Any
) -> LLMClient | None:
    """A client for the role's endpoint (see llm_config), its answers cached in Redis when `conn` is given
    (or in `cache`); None when the LLM is off or the role has no endpoint."""
    config = llm_config(settings, role, **overrides)
    if config is None:
        return None
    if cache is None and conn is not None:
        cache = RedisCache(conn)
    return LLMClient(config, cache=cache)


def embedded_llm_client(url: str, model: str, cache: Cache | None = None, **overrides: Any) -> LLMClient:
    """A client for an embedded llama.cpp server the caller started (the benches): its structured-output
    style, the LLMConfig defaults (no wait budget) and `overrides`."""
    return LLMClient(LLMConfig(**({"base_url": url, "model": model, "formats": EMBEDDED_FORMATS} | overrides)), cache)
