from __future__ import annotations

from pathlib import Path

import pytest

from backend.settings import Settings

pytest_plugins = ["tests.fixtures.services", "tests.fixtures.scripted_llm"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for an app under test: its own data dir, and a Redis that refuses connections."""
    return Settings(
        data_dir=tmp_path / "data",
        redis_url="redis://127.0.0.1:1/0",
        basic_auth_user="user",
        basic_auth_pass="secret",
        webhook_secret="hook-secret",
        min_annotations=4,
    )
