"""Parse a Label Studio label config into the one thing the backend needs: a task spec."""

from __future__ import annotations

from dataclasses import dataclass

from label_studio_sdk.label_interface import LabelInterface


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


def parse_label_config(label_config: str) -> TaskSpec:
    """The first <Choices> control attached to a <Text> object.

    Raises UnsupportedLabelConfig with a message fit to show a user.
    """
    if not isinstance(label_config, str) or not label_config.strip():
        raise UnsupportedLabelConfig("the label config is empty")
    try:
        interface = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises several unrelated types for bad XML
        raise UnsupportedLabelConfig(f"the label config cannot be parsed: {exc}") from exc

    seen: list[str] = []
    for control in interface.controls:
        seen.append(f"<{control.tag} name={control.name!r}>")
        if control.tag != "Choices":
            continue
        for target in control.to_name:
            try:
                obj = interface.get_object(target)
            except Exception:  # the SDK raises a bare Exception for a name with no usable object
                obj = None
            if obj is None or obj.tag not in ("Text", "HyperText"):
                continue
            value = obj.value or ""
            if not value.startswith("$") or len(value) < 2:
                continue
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
                data_key=value[1:],
                labels=labels,
                multi_label=control.attr.get("choice") == "multiple",
                descriptions=descriptions,
            )
    found = ", ".join(seen) if seen else "no control tags"
    raise UnsupportedLabelConfig(
        f"no supported control: this backend predicts <Choices> on a <Text> object; the config has {found}"
    )
