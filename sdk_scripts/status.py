"""`lsal-ops status`: where a project stands, from LS itself and (when reachable) from the backend.

LS gives the counts and the model version; the backend gives LLM spend, LLM-vs-human agreement, the
stopping signals and the rounds the learning curve is drawn from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend import kinds
from backend.labelstudio import LabelStudio
from backend.synthetic.assess import synthetic_effect
from backend.synthetic.provenance import is_synthetic
from sdk_scripts.backend_client import Backend, BackendError


@dataclass
class ProjectStatus:
    project_id: int
    title: str
    tasks: int
    labelled: int
    synthetic: int
    synthetic_labelled: int
    model_version: str | None
    sampling: str | None
    labels: dict[str, int]
    effect: str
    backend: dict[str, Any] = field(default_factory=dict)
    backend_error: str | None = None

    def lines(self) -> list[str]:
        out = [
            f"project {self.project_id} ({self.title}): {self.tasks} tasks, {self.labelled} labelled, "
            f"{self.tasks - self.labelled} unlabelled",
            f"synthetic tasks: {self.synthetic}, {self.synthetic_labelled} of them labelled by humans",
            "labels: " + (", ".join(f"{k} {v}" for k, v in sorted(self.labels.items())) or "none yet"),
            f"model version in LS: {self.model_version or 'none'} (sampling: {self.sampling or 'unknown'})",
            self.effect,
        ]
        if self.backend_error:
            return [*out, f"backend: {self.backend_error}"]
        if not self.backend:
            return [*out, "backend: not asked (set LSAL_BACKEND_URL or pass --backend-url)"]
        llm, queue = self.backend.get("llm") or {}, self.backend.get("queue") or {}
        spend = llm.get("spend") or {}
        prompt, completion = int(spend.get("prompt_tokens", 0)), int(spend.get("completion_tokens", 0))
        out.append(f"LLM: {prompt} prompt + {completion} completion tokens, ${spend.get('dollars', 0.0):.4f}; "
                   f"{llm.get('answers', 0)} pre-labels")  # fmt: skip
        checks = llm.get("checks") or {}
        if checks.get("checks"):
            out.append(f"LLM vs human: {checks['accuracy']:.1%} agreement on {checks['checks']} checked tasks")
            for row in checks.get("agreement") or []:
                if row.get("human") or row.get("predicted"):
                    out.append(f"  {row['label']}: precision {_pct(row.get('precision'))}, "
                               f"recall {_pct(row.get('recall'))} ({row.get('human', 0)} human labels)")  # fmt: skip
        else:
            out.append("LLM vs human: no checked tasks yet")
        current = queue.get("queue") or {}
        if current:
            out.append(f"queue: {current.get('version')} by {current.get('strategy')}, {len(current.get('order', []))} "
                       f"tasks, ranked after {current.get('labelled')} labels")  # fmt: skip
        for signal in queue.get("signals") or []:
            mark = "STOP" if signal.get("triggered") else "go  "
            out.append(f"  {mark} {signal.get('name')}: {signal.get('reason', '')}")
        return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def project_status(ls: LabelStudio, project_id: int, backend: Backend | None = None) -> ProjectStatus:
    project = ls.project(project_id)
    label_config = str(project.get("label_config") or "")
    kind = kinds.kind_for(label_config)
    spec = kind.parse(label_config)
    tasks = list(ls.iter_full_tasks(project_id))
    human = kind.examples(spec, tasks)
    labels = dict(kind.label_counts(spec, human))
    synthetic = [t for t in tasks if is_synthetic(t["data"])]
    real_examples = [e for e in human if not e.synthetic]
    synthetic_examples = [e for e in human if e.synthetic]
    status = ProjectStatus(
        project_id=project_id,
        title=str(project.get("title") or ""),
        tasks=len(tasks),
        labelled=len(human),
        synthetic=len(synthetic),
        synthetic_labelled=len(synthetic_examples),
        model_version=project.get("model_version") or None,
        sampling=project.get("sampling"),
        labels=labels,
        effect=synthetic_effect(spec, real_examples, synthetic_examples).line(),
    )
    if backend is not None:
        try:
            status.backend = {"llm": backend.get("/llm", project_id), "queue": backend.get("/queue", project_id)}
        except BackendError as exc:
            status.backend_error = str(exc)
    return status


def learning_curve_png(rounds: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """Prequential accuracy (the student on labels it had not seen) and mean confidence on the pool, by the
    number of human labels, with LLM dollars on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.get("labels", 0) for r in rounds]
    fig, ax = plt.subplots(figsize=(7, 4))
    accuracy = [
        (x, r["checked_accuracy"]) for x, r in zip(labels, rounds, strict=True) if r.get("checked_accuracy") is not None
    ]
    if accuracy:
        ax.plot(*zip(*accuracy, strict=True), marker="o", label="accuracy on newly labelled tasks")
    confidence = [
        (x, r["mean_confidence"]) for x, r in zip(labels, rounds, strict=True) if r.get("mean_confidence") is not None
    ]
    if confidence:
        ax.plot(*zip(*confidence, strict=True), linestyle="--", label="mean confidence on the pool")
    ax.set_xlabel("human labels")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    dollars = [r.get("llm_dollars") or 0.0 for r in rounds]
    if any(dollars):
        twin = ax.twinx()
        twin.plot(labels, dollars, color="grey", alpha=0.6, label="LLM $ spent")
        twin.set_ylabel("LLM $")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
