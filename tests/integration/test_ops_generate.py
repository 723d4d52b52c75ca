"""`lsal-ops generate` over real HTTP against the scripted LLM: its client comes from the settings."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from backend.labeling import build_choices_result, parse_label_config
from sdk_scripts import cli
from tests.fixtures.scripted_llm import Reply, ScriptedLLM
from tests.helpers import NEGATIVE, POSITIVE, SINGLE

pytestmark = pytest.mark.integration
CALLS = 6
WORDS = ["bright", "morning", "coffee", "garden", "river", "quiet", "laptop", "window", "yellow", "friendly",
         "market", "bicycle", "ocean", "thunder", "velvet", "orange", "mountain", "whisper", "candle", "harbor",
         "silver", "meadow", "lantern", "pepper"]  # fmt: skip


class FakeLabelStudio:
    """A project with a few human labels; what `generate` imports is kept."""

    def __init__(self) -> None:
        spec = parse_label_config(SINGLE)
        labelled = [(text, "Positive") for text in POSITIVE] + [(text, "Negative") for text in NEGATIVE]
        self.tasks = [
            {"id": i, "data": {"text": text}, "annotations": [{"result": build_choices_result(spec, (label,))}]}
            for i, (text, label) in enumerate(labelled, start=1)
        ]
        self.imported: list[Mapping[str, Any]] = []

    def label_config(self, project_id: int) -> str:
        return SINGLE

    def iter_full_tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        yield from self.tasks

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> int:
        self.imported += tasks
        return len(tasks)


class InFlight:
    """A scripted reply that counts the requests being answered at once: each is held until `expected` are
    in flight (or every one has arrived), and a moment longer, so an extra request sent beside them shows."""

    def __init__(self, expected: int, total: int) -> None:
        self.expected, self.total = expected, total
        self.started = self.now = self.peak = 0
        self.held = threading.Condition()

    def __call__(self, body: dict[str, Any]) -> Reply:
        with self.held:
            self.started += 1
            number = self.started
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.held.notify_all()
            self.held.wait_for(lambda: self.now >= self.expected or self.started == self.total, timeout=10)
        time.sleep(0.1)
        with self.held:
            self.now -= 1
        texts = [" ".join(random.Random(f"{number}-{i}").sample(WORDS, 8)) for i in range(2)]
        return Reply(json.dumps({"texts": texts}))


@pytest.fixture
def ops_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeLabelStudio]:
    from backend.settings import get_settings

    ls = FakeLabelStudio()
    monkeypatch.setattr(cli, "_ls", lambda settings: ls)
    for name, value in {"LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "key",
                        "DATA_DIR": str(tmp_path), "LLM_PRICES": "scripted=0/0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield ls
    get_settings.cache_clear()  # the next test reads its own environment


@pytest.mark.parametrize("concurrency", [1, 3])
def test_generate_sends_llm_concurrency_requests_at_a_time(
    ops_env: FakeLabelStudio, scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    from backend.settings import get_settings

    monkeypatch.setenv("LLM_CONCURRENCY", str(concurrency))
    get_settings.cache_clear()
    replies = InFlight(concurrency, CALLS)
    scripted_llm.default = replies
    asked = ["--label", "Positive", "--per-target", str(2 * CALLS), "--per-call", "2", "--no-check"]
    code = cli.main(
        ["generate", "--project", "1", *asked, "--quiet", "--model", "scripted", "--llm-url", scripted_llm.url]
    )
    assert code == 0
    assert len(scripted_llm.requests) == CALLS and replies.started == CALLS
    assert replies.peak == concurrency  # never more, as the default of 4 used to send
    assert sorted(task["data"]["text"] for task in ops_env.imported) == sorted(
        " ".join(random.Random(f"{number}-{i}").sample(WORDS, 8)) for number in range(1, CALLS + 1) for i in range(2)
    )
