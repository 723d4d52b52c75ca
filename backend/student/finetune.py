"""A fine-tuned encoder student: all-MiniLM-L6-v2 with a linear head, trained end to end on the human labels.

Slower to train than the fast student (minutes for hundreds of labels on 2 cores, against about a second)
but it learns far more from few labels (the issue measured 0.921 on TREC-6 at 500 labels against 0.852).
It is meant to run after the fast student is published, and to be published only when it wins:

- A stratified fifth of the labels is held out (`holdout`). The model is fine-tuned on the rest; its
  temperature is fitted on the held-out fifth (then shrunk by 1/(n+2) like the fast student's), and the
  same fifth decides whether it beats the fast student (`wins`): the fast student fitted on the same
  four fifths is scored on the same tasks.
- `should_stop()` is asked between batches: new labels arrived, or the job's time is running out. The
  fit then raises `FineTuneStopped` and leaves nothing behind.

Single-label only; a FineTunedEncoder pickles with its weights (float16, ~45 MB). What is published is a
`FineTunedStudent`: the fine-tuned model's probabilities for every task the project held, looked up by the
task text's digest (so /predict stays a lookup: the network never runs on the request path), and the fast
student it beat for texts that came later.
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from scipy.special import softmax
from scipy.stats import binomtest
from sklearn.model_selection import train_test_split

from backend.student.encoder import MINILM, SentenceEncoder, text_digest
from backend.student.model import LabelPrediction, StudentModel, decide, fit_temperature

AUTO, NEVER, ALWAYS = "auto", "never", "always"
MIN_LABELS_TO_SPLIT = 10  # below, the held-out fifth is too small to decide anything


class FineTuneStopped(RuntimeError):
    """The fine-tuning was asked to stop (new labels, or the job's time is up)."""


def wins(fast_right: Sequence[bool], tuned_right: Sequence[bool], margin: float = 0.02, alpha: float = 0.1) -> bool:
    """Whether the fine-tuned model beats the fast one on the same held-out tasks.

    Both accuracy by at least `margin` and a one-sided sign test on the tasks where exactly one of them is
    right (McNemar's exact test) at level `alpha`: a small held-out set must not publish a lucky model.
    """
    if len(fast_right) != len(tuned_right) or not len(fast_right):
        raise ValueError("both models must be scored on the same, non-empty held-out tasks")
    fast, tuned = np.asarray(fast_right, bool), np.asarray(tuned_right, bool)
    if tuned.mean() - fast.mean() < margin:
        return False
    only_tuned, only_fast = int((tuned & ~fast).sum()), int((fast & ~tuned).sum())
    return bool(binomtest(only_tuned, only_tuned + only_fast, 0.5, alternative="greater").pvalue < alpha)


def skip_reason(mode: str, multi_label: bool, labelled: int, min_labels: int, max_labels: int) -> str | None:
    """Why a project is not fine-tuned now (STUDENT_FINETUNE `mode`), or None when it is."""
    if mode == NEVER:
        return "STUDENT_FINETUNE=never"
    if multi_label:
        return "fine-tuning is for single-label configs; multi-label projects keep the fast student"
    least = MIN_LABELS_TO_SPLIT if mode == ALWAYS else max(min_labels, MIN_LABELS_TO_SPLIT)
    if labelled < least:
        return f"{labelled} human labels: fine-tuning starts at {least}" + (
            " (FINETUNE_MIN_LABELS)" if mode == AUTO else ""
        )
    if mode == AUTO and labelled > max_labels:
        return (f"{labelled} human labels: past FINETUNE_MAX_LABELS ({max_labels}) the fast student is close to "
                "full supervision and a fine-tune would hold a worker for long")  # fmt: skip
    return None


def should_publish(mode: str, fast_right: Sequence[bool], tuned_right: Sequence[bool]) -> bool:
    """auto: only a clear win (`wins`); always: unless it is less accurate than the fast student on the same
    held-out labels."""
    if mode == ALWAYS:
        return bool(np.mean(tuned_right) >= np.mean(fast_right))
    return wins(fast_right, tuned_right)


class FineTunedEncoder:
    """Text classifier: the encoder's mean-pooled embedding into a linear head, all of it trained."""

    def __init__(
        self,
        labels: Sequence[str],
        encoder: str = MINILM,
        epochs: int = 4,
        min_steps: int = 60,
        batch_size: int = 16,
        learning_rate: float = 5e-5,
        max_length: int = 128,
        holdout: float = 0.2,
        seed: int = 0,
    ) -> None:
        if len(labels) < 2:
            raise ValueError("a classifier needs at least two labels")
        self.labels = tuple(labels)
        self.encoder = encoder
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_length = max_length
        self.holdout = holdout
        self.seed = seed
        self.classes_: tuple[str, ...] = ()
        self.temperature_: float = 1.0
        self.shrink_: float = 0.0
        self.train_rows_: np.ndarray | None = None
        self.holdout_rows_: np.ndarray | None = None
        self.holdout_right_: list[bool] = []
        self.fit_seconds_: float = 0.0
        self._state: bytes | None = None
        self._network: Any = None

    def split(self, targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The rows it trains on and the rows it holds out (stratified, seeded): the fast student's
        comparison must use the same ones. A label seen once is trained on; where there are too few rows to
        hold out every label, the split is not stratified."""
        counts = Counter(targets)
        alone = np.array([i for i, t in enumerate(targets) if counts[t] == 1], dtype=int)
        rows = np.array([i for i, t in enumerate(targets) if counts[t] > 1], dtype=int)
        strata = [targets[i] for i in rows]
        try:
            train, held = train_test_split(rows, test_size=self.holdout, random_state=self.seed, stratify=strata)
        except ValueError:  # fewer held-out rows than labels
            train, held = train_test_split(rows, test_size=self.holdout, random_state=self.seed)
        return np.sort(np.concatenate([train, alone])).astype(int), np.sort(held).astype(int)

    def fit(
        self, texts: Sequence[str], targets: Sequence[str], should_stop: Callable[[], bool] = lambda: False
    ) -> FineTunedEncoder:
        """Fine-tune on four fifths; the held-out fifth gives the temperature and `holdout_right_`."""
        started = time.perf_counter()
        unknown = set(targets) - set(self.labels)
        if unknown:
            raise ValueError(f"targets use labels that are not in the config: {sorted(unknown)}")
        if len(set(targets)) < 2:
            raise ValueError("training needs at least two distinct labels")
        self.classes_ = tuple(sorted(set(targets)))
        y = self._targets(targets)
        self.train_rows_, self.holdout_rows_ = self.split(targets)
        self._network = self._train(texts, y, self.train_rows_, should_stop)
        held_logits = self._logits([texts[i] for i in self.holdout_rows_])
        held_y = y[self.holdout_rows_]
        self.temperature_ = fit_temperature(held_logits, held_y)
        self.shrink_ = 1.0 / (len(held_y) + 2)  # as the fast student: no more confidence than n checks justify
        self.holdout_right_ = [bool(r) for r in held_logits.argmax(axis=1) == held_y]
        self._keep_weights()
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def refit(
        self, texts: Sequence[str], targets: Sequence[str], should_stop: Callable[[], bool] = lambda: False
    ) -> FineTunedEncoder:
        """Fine-tune again on every label, keeping the temperature and the held-out verdict of `fit`: once the
        held-out fifth has decided, it is worth more as training data."""
        if self._state is None:
            raise RuntimeError("refit follows fit")
        started = time.perf_counter()
        self._network = self._train(texts, self._targets(targets), np.arange(len(targets)), should_stop)
        self._keep_weights()
        self.fit_seconds_ += time.perf_counter() - started
        return self

    def _targets(self, targets: Sequence[str]) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.classes_)}
        return np.array([index[t] for t in targets])

    def _train(self, texts: Sequence[str], y: np.ndarray, rows: np.ndarray, should_stop: Callable[[], bool]) -> Any:
        import torch

        torch.manual_seed(self.seed)
        network = self._new_network()
        optimizer = torch.optim.AdamW(network.parameters(), lr=self.learning_rate, weight_decay=0.01)
        per_epoch = math.ceil(len(rows) / self.batch_size)
        epochs = max(self.epochs, math.ceil(self.min_steps / per_epoch))  # few labels: more passes over them
        steps = epochs * per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(1, steps)))
        rng = np.random.default_rng(self.seed)
        network.train()
        for _ in range(epochs):
            order = rng.permutation(rows)
            for start in range(0, len(order), self.batch_size):
                if should_stop():
                    raise FineTuneStopped("asked to stop")
                batch = order[start : start + self.batch_size]
                loss = torch.nn.functional.cross_entropy(network([texts[i] for i in batch]), torch.as_tensor(y[batch]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
        return network.eval()

    def _keep_weights(self) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save({k: v.half() for k, v in self._network.state_dict().items()}, buffer)
        self._state = buffer.getvalue()

    @property
    def holdout_accuracy_(self) -> float:
        return float(np.mean(self.holdout_right_)) if self.holdout_right_ else float("nan")

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities with one column per label of the config, in `labels` order."""
        if self._state is None:
            raise RuntimeError("the model is not fitted")
        out = np.zeros((len(texts), len(self.labels)))
        if not len(texts):
            return out
        proba = softmax(self._logits(texts) / self.temperature_, axis=1)
        proba = (1 - self.shrink_) * proba + self.shrink_ / proba.shape[1]
        for j, label in enumerate(self.classes_):
            out[:, self.labels.index(label)] = proba[:, j]
        return out

    def _logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import torch

        network = self._loaded()
        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                parts.append(network(list(texts[start : start + batch_size])).float().numpy())
        return np.vstack(parts)

    def _new_network(self) -> Any:
        import torch

        encoder = SentenceEncoder(self.encoder, max_length=self.max_length)
        encoder.load()
        classes = len(self.classes_)

        class Network(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = encoder._model
                self.head = torch.nn.Linear(encoder.dim, classes)

            def forward(self, texts: list[str]) -> torch.Tensor:
                batch = encoder._tokenizer(texts, padding=True, truncation=True, max_length=encoder.max_length,
                                           return_tensors="pt")  # fmt: skip
                hidden = self.body(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                return self.head(pooled)

        return Network()

    def _loaded(self) -> Any:
        if self._network is None:
            import torch

            network = self._new_network()
            state = torch.load(io.BytesIO(self._state), weights_only=True)  # type: ignore[arg-type]
            network.load_state_dict({k: v.float() for k, v in state.items()})
            self._network = network.eval()
        return self._network

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_network": None}  # the weights travel in _state


class FineTunedStudent:
    """The published fine-tuned model: its probabilities for the texts it was given, by digest, and the fast
    student for any other text. Reads like a StudentModel (labels, encoder, predict_proba, predict)."""

    multi_label = False

    def __init__(self, fast: StudentModel, texts: Sequence[str], proba: np.ndarray) -> None:
        if fast.multi_label:
            raise ValueError("a fine-tuned student is single-label")
        if len(texts) != len(proba):
            raise ValueError(f"{len(texts)} texts but {len(proba)} rows of probabilities")
        self.fast = fast  # the fine-tuned weights are not kept: 45 MB per serving process, and nothing runs them
        self.labels = fast.labels
        self.encoder = fast.encoder
        self.rows_ = {text_digest(t): np.asarray(row, np.float32) for t, row in zip(texts, proba, strict=True)}

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """Probabilities in `labels` order: the fine-tuned model's where it saw the text, else the fast
        student's (`embeddings`, one row per text, are only read for those)."""
        out = np.zeros((len(texts), len(self.labels)))
        later: list[int] = []
        for i, text in enumerate(texts):
            row = self.rows_.get(text_digest(text))
            if row is None:
                later.append(i)
            else:
                out[i] = row
        if later:
            vectors = None if embeddings is None else np.asarray(embeddings)[later]
            out[later] = self.fast.predict_proba([texts[i] for i in later], vectors)
        return out

    def predict(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> list[LabelPrediction]:
        return [decide(row, self.labels, False) for row in self.predict_proba(texts, embeddings)]


def batched_proba(
    model: FineTunedEncoder, texts: Sequence[str], should_stop: Callable[[], bool] = lambda: False, batch: int = 64
) -> Iterator[np.ndarray]:
    """The model's probabilities, one batch at a time, stopping between batches when asked to."""
    for start in range(0, len(texts), batch):
        if should_stop():
            raise FineTuneStopped("asked to stop")
        yield model.predict_proba(texts[start : start + batch])
