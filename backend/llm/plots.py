"""The reliability diagram of a project's LLM pre-labels, before and after calibration (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server or a worker
import matplotlib.pyplot as plt


def reliability_png(report: dict[str, Any], path: Path, title: str = "") -> Path:
    """Accuracy against mean confidence per bin, raw and calibrated, with the diagonal and each ECE."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    panels = [("raw", "reliability_raw", "ece_raw"), ("calibrated (out of fold)", "reliability_calibrated",
                                                       "ece_calibrated")]  # fmt: skip
    for ax, (name, bins_key, ece_key) in zip(axes, panels, strict=True):
        bins = report.get(bins_key) or []
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        if bins:
            ax.bar([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], width=0.08, alpha=0.7,
                   color="tab:blue", edgecolor="black")  # fmt: skip
            for b in bins:
                ax.annotate(str(b["count"]), (b["mean_confidence"], b["accuracy"]), ha="center", va="bottom",
                            fontsize=7)  # fmt: skip
        ece = report.get(ece_key)
        ax.set_title(f"{name}: ECE {ece:.3f}" if ece is not None else f"{name}: not fitted yet")
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("share right (human-checked)")
    threshold = report.get("threshold")
    if threshold is not None:
        axes[1].axvline(threshold, color="tab:green", linewidth=1)
        axes[1].text(threshold, 0.05, f" auto-accept >= {threshold:.2f}", color="tab:green", fontsize=8)
    fig.suptitle(f"{title} - {report.get('checks', 0)} checks".strip(" -"))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path
