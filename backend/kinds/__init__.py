"""Task kinds: one module per kind of labelling task the backend serves, and the registry that picks one.

The contract (base.TaskKind): a kind recognises its control in a label config and parses it into a spec
(frozen data: which control, which text field, which labels); reads human annotations back into training
examples and turns a prediction's labels into LS results; builds its student; asks the LLM (prompts,
answer schema, parser, the annotate call) and checks the LLM's answers against humans; and gives the query
strategies their per-task signals (the Pool), the pool's mean confidence and a comparable value of a
task's labels for the stopping rules. Its methods are thin: the work stays in the pure modules under
labeling/, student/, llm/ and selection/.

The jobs, the routes and `lsal-ops` ask the registry, never a kind's module:
- `kind_for(label_config)`: the kind that serves a config (the first registered that recognises it);
- `parse(label_config)`: that kind's spec;
- `kind_of(spec)`: the kind a parsed spec belongs to, for code that holds only the spec;
- `not_predicted(label_config, spec)`: the controls of a served config that no served kind will fill (a
  <Labels> beside the <Choices> classification predicts), for /validate to say so.

Adding a kind is adding a module here that implements TaskKind and registering it in KINDS. A config
that no kind recognises is refused (UnsupportedLabelConfig) with what each kind predicts and what the
config has. PENDING holds kinds whose config and LS-data half is built but whose jobs are not wired
(spans: no LLM pre-annotation, no Pool yet): they are never served, and a config only they recognise is
refused saying so.
"""

from __future__ import annotations

from typing import Any

from backend.kinds.base import Spec, TaskKind, prediction_item
from backend.kinds.classification import CLASSIFICATION
from backend.kinds.spans import SPANS
from backend.labeling.config import UnsupportedLabelConfig, label_interface, no_supported_control

KINDS: tuple[TaskKind[Any, Any], ...] = (CLASSIFICATION,)
PENDING: tuple[TaskKind[Any, Any], ...] = (SPANS,)

__all__ = ["KINDS", "PENDING", "Spec", "TaskKind", "kind_for", "kind_of", "not_predicted", "parse", "prediction_item"]


def kind_for(label_config: str) -> TaskKind[Any, Any]:
    """The kind that serves `label_config`; UnsupportedLabelConfig, saying why, when none does."""
    interface = label_interface(label_config)
    for kind in KINDS:
        if kind.recognises(interface):
            return kind
    refusal = no_supported_control(interface, [kind.predicts for kind in KINDS])
    pending = [kind for kind in PENDING if kind.recognises(interface)]
    if pending:
        refusal = type(refusal)(f"{refusal}; {pending[0].predicts} is not served yet: {pending[0].missing}")
    raise refusal


def not_predicted(label_config: str, spec: Spec) -> list[str]:
    """A line for each control of a pending kind in a config `spec` was parsed from: it will not be filled.

    One more parse of the config, and a pending kind's own parse only where it recognises a control.
    """
    interface = label_interface(label_config)
    served = kind_of(spec)
    lines = []
    for kind in PENDING:
        if kind.recognises(interface):
            try:
                control = repr(kind.parse(label_config).from_name)
            except UnsupportedLabelConfig as exc:  # unusable as well as unserved: say both
                control = f"({exc})"
            lines.append(f"the {kind.predicts} {control} is not predicted: this backend fills the "
                         f"{served.predicts} {spec.from_name!r} only")  # fmt: skip
    return lines


def parse(label_config: str) -> Spec:
    """The spec of `label_config`, parsed by the kind that serves it."""
    return kind_for(label_config).parse(label_config)


def kind_of(spec: Spec) -> TaskKind[Any, Any]:
    """The kind whose spec `spec` is."""
    for kind in KINDS:
        if isinstance(spec, kind.spec_type):
            return kind
    raise TypeError(f"{type(spec).__name__} is no registered task kind's spec")
