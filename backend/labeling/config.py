"""Parse a Label Studio label config into the one thing the backend needs: a task spec."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

TEXT_OBJECTS = ("Text", "HyperText")


class UnsupportedLabelConfig(ValueError):
    """The label config is malformed or has no control this backend can predict."""


@dataclass(frozen=True)
class TaskSpec:
    """A text-classification task: which control we fill, from which text field."""

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]
    multi_label: bool
    descriptions: tuple[tuple[str, str], ...] = ()

    def text_of(self, task_data: dict) -> str | None:
        """The task's text, or None when the configured field is missing or not text."""
        value = task_data.get(self.data_key)
        if isinstance(value, str) and value.strip():
            return value
        return None


def label_interface(label_config: str) -> LabelInterface:
    """The SDK's parsed view of a config; UnsupportedLabelConfig when it is empty or not a config."""
    if not isinstance(label_config, str) or not label_config.strip():
        raise UnsupportedLabelConfig("the label config is empty")
    try:
        return LabelInterface(label_config)
    except Exception as exc:  # the SDK raises several unrelated types for bad XML
        raise UnsupportedLabelConfig(f"the label config cannot be parsed: {exc}") from exc


def text_targets(interface: LabelInterface, control: Any) -> Iterator[tuple[Any, str]]:
    """The text objects `control` is attached to, each with the task data key its `$value` names."""
    for target in control.to_name:
        try:
            obj = interface.get_object(target)
        except Exception:  # the SDK raises a bare Exception for a name with no usable object
            obj = None
        if obj is None or obj.tag not in TEXT_OBJECTS:
            continue
        value = obj.value or ""
        if value.startswith("$") and len(value) >= 2:
            yield obj, value[1:]


def controls_on_text(interface: LabelInterface, tag: str) -> Iterator[tuple[Any, Any, str]]:
    """Each (control, text object, data key) where a `tag` control is attached to a text object, in config order."""
    for control in interface.controls:
        if control.tag == tag:
            for obj, data_key in text_targets(interface, control):
                yield control, obj, data_key


def no_supported_control(interface: LabelInterface, predicted: Sequence[str]) -> UnsupportedLabelConfig:
    """The error for a config none of the `predicted` control shapes matches, naming what it has."""
    seen = [f"<{control.tag} name={control.name!r}>" for control in interface.controls]
    found = ", ".join(seen) if seen else "no control tags"
    return UnsupportedLabelConfig(
        f"no supported control: this backend predicts {' or '.join(predicted)}; the config has {found}"
    )


CHOICES_ON_TEXT = "<Choices> on a <Text> object"


def choices_spec(interface: LabelInterface) -> TaskSpec | None:
    """The spec of the first <Choices> control attached to a text object; None when there is none."""
    for control, obj, data_key in controls_on_text(interface, "Choices"):
        labels = tuple(control.labels)
        if len(labels) < 2:
            raise UnsupportedLabelConfig(
                f"<Choices name={control.name!r}> needs at least two <Choice> values, has {len(labels)}"
            )
        descriptions = tuple(
            (label, str(attrs.attr.get("hint") or attrs.attr.get("alias") or ""))
            for label, attrs in (control.labels_attrs or {}).items()
            if attrs.attr.get("hint") or attrs.attr.get("alias")
        )
        return TaskSpec(
            from_name=control.name,
            to_name=obj.name,
            data_key=data_key,
            labels=labels,
            multi_label=control.attr.get("choice") == "multiple",
            descriptions=descriptions,
        )
    return None


def parse_label_config(label_config: str) -> TaskSpec:
    """The first <Choices> control attached to a <Text> object.

    Raises UnsupportedLabelConfig with a message fit to show a user.
    """
    interface = label_interface(label_config)
    spec = choices_spec(interface)
    if spec is None:
        raise no_supported_control(interface, [CHOICES_ON_TEXT])
    return spec
