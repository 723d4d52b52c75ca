"""Small shared pieces for the tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SINGLE = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
  </Choices>
</View>"""

MULTI = """<View>
  <Text name="body" value="$body"/>
  <Choices name="topics" toName="body" choice="multiple">
    <Choice value="Sports" hint="games and athletes"/>
    <Choice value="Politics"/>
    <Choice value="Tech"/>
  </Choices>
</View>"""

NO_CHOICES = """<View>
  <Text name="text" value="$text"/>
  <Labels name="ner" toName="text"><Label value="PER"/><Label value="ORG"/></Labels>
</View>"""

POSITIVE = [
    "I love this, wonderful and great",
    "great product, happy and delighted",
    "wonderful service, love it",
    "happy with it, great value",
    "excellent, love the quality",
    "delighted, wonderful experience",
]
NEGATIVE = [
    "I hate this, terrible and awful",
    "awful product, sad and angry",
    "terrible service, hate it",
    "angry with it, awful value",
    "horrible, hate the quality",
    "disappointed, terrible experience",
]


def choice(from_name: str, to_name: str, *labels: str) -> dict:
    return {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": list(labels)}}


def fit_thousands_of_texts() -> dict[str, float]:
    """An rq job: fit the student on 2,100 texts, enough for it to fork for its char features and for its
    calibration probe, and say how many children it started and how well it fits."""
    import numpy as np

    from backend.student import StudentModel
    from backend.student import model as student_model

    started = []
    real = student_model.in_fork

    def counted(function, side_by_side=True):  # type: ignore[no-untyped-def]
        started.append(side_by_side and student_model._can_fork())
        return real(function, side_by_side)

    student_model.in_fork = counted  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, 12)) for _ in range(2100)]
    labels = ["a" if {"w1", "w2", "w3"} & set(t.split()) else "b" for t in texts]
    model = StudentModel(["a", "b"]).fit(texts, [(label,) for label in labels])
    right = [p.labels[0] == label for p, label in zip(model.predict(texts), labels, strict=True)]
    return {"forks": sum(started), "training_accuracy": sum(right) / len(right)}


class CountingEncoder:
    """A stand-in for SentenceEncoder: deterministic unit vectors from the text, and a count of what it encoded."""

    def __init__(self, name: str = "minilm", dim: int = 384) -> None:
        self.name = name
        self.dim = dim
        self.batch_size = 32
        self.encoded: list[str] = []

    def encode(self, texts, progress=None):  # type: ignore[no-untyped-def]
        import hashlib

        import numpy as np

        self.encoded.extend(texts)
        rows = [np.random.default_rng(int.from_bytes(hashlib.sha1(t.encode()).digest()[:8])).standard_normal(self.dim)
                for t in texts]  # fmt: skip
        out = np.array(rows, dtype=np.float32).reshape(len(texts), self.dim)
        if progress is not None and len(texts):
            progress(len(texts))
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
