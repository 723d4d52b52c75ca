"""Fill a label_configs/ template with a project's own labels. Pure: strings in, string out."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from backend.labeling.config import UnsupportedLabelConfig


def render(template: str, labels: Sequence[str], text_field: str | None = None) -> str:
    """The template's first <Choices> gets exactly `labels`; `text_field` renames the `$text` variable."""
    if len(set(labels)) < 2:
        raise UnsupportedLabelConfig("a classification project needs at least two distinct labels")
    try:
        root = ET.fromstring(template)
    except ET.ParseError as exc:
        raise UnsupportedLabelConfig(f"the template is not valid XML: {exc}") from exc
    choices = root.find(".//Choices")
    if choices is None:
        raise UnsupportedLabelConfig("the template has no <Choices> control")
    for old in choices.findall("Choice"):
        choices.remove(old)
    for label in dict.fromkeys(labels):
        ET.SubElement(choices, "Choice", {"value": label})
    if text_field:
        for tag in root.iter("Text"):
            tag.set("value", f"${text_field}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")
