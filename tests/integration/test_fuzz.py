"""A bounded, seeded fuzz of every route of the real server (gunicorn, as `lsal serve` runs it).

A few thousand requests: malformed, oversized and deeply nested bodies, odd project ids, odd label
configs (XXE, billion laughs, broken XML, thousands of choices), odd tasks. None may get a 5xx, and
the server must still answer afterwards. Redis is up (a private one), so a 503 would be a defect too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.services import free_port, wait_for
from tests.helpers import MULTI, NO_CHOICES, ROOT, SINGLE

pytestmark = pytest.mark.integration

REQUESTS = 3000
SEED = 20261202
AUTH = ("fuzz", "fuzz-password")

ODD_IDS: list[Any] = [
    1, 7, -1, 0, 2**31 - 1, 2**31, 2**63, 10**300, "9" * 300, 1.5, float("inf"), "1e5", "0x10", " 12 ", "12.",
    "12.1700000000", "12.abc", "\uff11\uff12", "", None, True, [], {}, {"id": None}, {"id": "x"},
    {"id": 3, "created_at": 5}, {"id": 3, "created_at": "2026-13-45"}, "\x00", "-0",
]  # fmt: skip
XXE = """<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="&x;"/><Choice value="b"/>
</Choices></View>"""
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
    + ']><View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="&i;"/>'
    + '<Choice value="b"/></Choices></View>'
)
MANY_CHOICES = SINGLE.replace('<Choice value="Negative"/>', "".join(f'<Choice value="c{i}"/>' for i in range(3000)))
CONFIGS: list[Any] = [
    SINGLE, MULTI, NO_CHOICES, XXE, LAUGHS, MANY_CHOICES, "<View>", "<View></View>", "not xml at all", "", 5, None,
    ["<View/>"], SINGLE.replace("$text", "$"), SINGLE.replace('value="$text"', ""), "<" * 5000, "<View>" * 2000,
    SINGLE + "<!--" + "x" * 1_100_000 + "-->",
]  # fmt: skip
ACTIONS = ["START_TRAINING", "ANNOTATION_CREATED", "TASKS_CREATED", "TASKS_DELETED", "PROJECT_DELETED",
           "PROJECT_UPDATED", "NOPE", "", None, 5]  # fmt: skip


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, -1, 2**70, 3.5, float("nan")])
    if kind == 2:
        return rng.choice(["", "x", "text", "\u202e\u0000", "😀" * 50, "a" * rng.randrange(1, 5000)])
    if kind in (3, 4, 5):
        return rng.choice(ODD_IDS)
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["id", "data", "text", "project", "x"]): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _task(rng: random.Random) -> Any:
    return rng.choice([
        {"id": rng.choice(ODD_IDS), "data": {"text": _value(rng)}},
        {"id": 5, "data": {"text": "a perfectly ordinary question?"}},
        {"data": _value(rng)},
        _value(rng),
    ])  # fmt: skip


def _json_body(rng: random.Random, path: str) -> Any:
    project = rng.choice(ODD_IDS)
    if path == "/setup":
        return {"project": project, "schema": rng.choice(CONFIGS), "hostname": _value(rng), "access_token": "t"}
    if path == "/predict":
        return {"project": project, "label_config": rng.choice(CONFIGS),
                "tasks": rng.choice([[_task(rng) for _ in range(rng.randrange(5))], _value(rng)])}  # fmt: skip
    if path == "/webhook":
        return {"action": rng.choice(ACTIONS), "project": project, "tasks": [_task(rng)], "annotation": _value(rng)}
    if path == "/validate":
        return {"config": rng.choice(CONFIGS)}
    if path == "/queue/settings":
        return {"project": project, "enabled": _value(rng)}
    return {"project": project}


def _raw_body(rng: random.Random, path: str) -> tuple[bytes, str]:
    """What goes on the wire: usually JSON, sometimes anything but."""
    roll = rng.random()
    if roll < 0.70:
        body = _json_body(rng, path)
        if rng.random() < 0.2:
            body = _value(rng)
        return json.dumps(body, allow_nan=True).encode(), "application/json"
    if roll < 0.78:
        depth = rng.choice([50, 1000, 100_000])
        return b"[" * depth + b"]" * depth, "application/json"
    if roll < 0.84:
        return b'{"project": 1, "tasks": [' + b'{"data": {"text": "x"}},' * 60_000 + b"{}]}", "application/json"
    if roll < 0.92:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200))), rng.choice(
            ["application/json", "text/plain"]
        )
    return rng.choice([b"", b"null", b"{", b'{"project": 1', b"\xff\xfe{}", b'"str"']), "application/json"


GET_ROUTES = ["/", "/health", "/metrics", "/versions", "/llm", "/queue", "/llm/reliability.png", "/nope"]
POST_ROUTES = ["/setup", "/predict", "/webhook", "/train", "/rank", "/preannotate", "/validate", "/versions",
               "/queue/settings"]  # fmt: skip


@pytest.fixture
def server(tmp_path: Path, redis_url: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "HOST": "127.0.0.1",
           "REDIS_URL": redis_url, "WEB_WORKERS": "1", "BASIC_AUTH_USER": AUTH[0], "BASIC_AUTH_PASS": AUTH[1],
           "MAX_REQUEST_MB": "1", "LLM_ENABLED": "true", "LLM_BASE_URL": "http://127.0.0.1:1/v1"}  # fmt: skip
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/health", auth=AUTH, timeout=2).ok, timeout=60, what="lsal serve")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        server_errors = [line for line in log.read_text(errors="replace").splitlines() if "unhandled error" in line]
        print("\n".join(server_errors[:20]))


def test_a_bounded_fuzz_of_every_route_gets_no_5xx(server: str) -> None:
    rng = random.Random(SEED)
    session = requests.Session()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    for _ in range(REQUESTS):
        auth = AUTH if rng.random() < 0.95 else rng.choice([None, ("fuzz", "wrong"), ("", "")])
        if rng.random() < 0.3:
            path = rng.choice(GET_ROUTES)
            query = {"project": rng.choice(ODD_IDS)} if rng.random() < 0.9 else {}
            response = session.get(server + path, params=query, auth=auth, timeout=30)
        else:
            path = rng.choice(POST_ROUTES)
            body, content_type = _raw_body(rng, path)
            try:
                response = session.post(server + path, data=body, auth=auth, timeout=30,
                                        headers={"Content-Type": content_type})  # fmt: skip
            except requests.ConnectionError as exc:
                raise AssertionError(f"{path} with {len(body)} bytes: {exc}") from exc
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            failures.append(f"{path} -> {response.status_code}: {response.text[:200]}")
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {REQUESTS} requests in {elapsed:.0f} s, statuses {dict(sorted(statuses.items()))}")
    assert not failures, failures[:10]
    assert requests.get(f"{server}/health", auth=AUTH, timeout=5).json()["status"] == "UP"
    assert statuses[200] > 0 and statuses[400] > 0 and statuses[401] > 0 and statuses[413] > 0  # it reached them
