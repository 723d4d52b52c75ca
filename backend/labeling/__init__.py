"""Label config -> task spec, and Label Studio result building/parsing. Pure: no I/O."""

from backend.labeling.config import TaskSpec, UnsupportedLabelConfig, parse_label_config
from backend.labeling.results import (
    Example,
    build_choices_result,
    labels_from_annotation,
    training_examples,
)

__all__ = [
    "Example",
    "TaskSpec",
    "UnsupportedLabelConfig",
    "build_choices_result",
    "labels_from_annotation",
    "parse_label_config",
    "training_examples",
]
