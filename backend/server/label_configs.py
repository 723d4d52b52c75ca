"""Parsed label configs kept in memory, within a byte budget.

`/setup`, `/validate` and `/predict` parse the same few configs over and over; a client that sends many
distinct large ones must not grow the server without bound. Each entry counts as the size of its XML
(the parsed spec is smaller), and the least recently used entries go first once the budget is spent.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from backend import kinds
from backend.kinds import Spec
from backend.labeling import UnsupportedLabelConfig
from backend.server.protocol import ProtocolError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """A least-recently-used map whose entries' declared sizes add up to at most `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: K, value: V, size: int) -> None:
        self.pop(key)
        if size > self.max_bytes:
            return  # larger than the whole budget: served, never kept
        self._entries[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def pop(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1]


class LabelConfigs:
    """Label config -> its kind's spec, parsed once per distinct config, and the config each project set."""

    def __init__(self, max_config_bytes: int, cache_bytes: int) -> None:
        self.max_config_bytes = max_config_bytes
        self._parsed: BoundedLRU[str, Spec] = BoundedLRU(cache_bytes // 2)
        self._projects: BoundedLRU[int, Spec] = BoundedLRU(cache_bytes // 2)

    @property
    def cached_bytes(self) -> int:
        return self._parsed.bytes + self._projects.bytes

    def spec(self, label_config: Any) -> Spec:
        """The spec of a config; 422 for one we cannot serve, 413 for one over the size limit."""
        return self._spec_and_size(label_config)[0]

    def remember(self, project_id: int, label_config: Any) -> Spec:
        spec, size = self._spec_and_size(label_config)
        self._projects.put(project_id, spec, size)
        return spec

    def _spec_and_size(self, label_config: Any) -> tuple[Spec, int]:
        if not isinstance(label_config, str):
            raise ProtocolError("a label config (XML string) is required", status=422)
        encoded = label_config.encode("utf-8", "surrogatepass")  # once: /predict may send it on every call
        if len(encoded) > self.max_config_bytes:
            raise ProtocolError(f"the label config is {len(encoded):,} bytes; the limit is {self.max_config_bytes:,} "
                                "(MAX_LABEL_CONFIG_KB)", status=413)  # fmt: skip
        digest = hashlib.sha256(encoded).hexdigest()
        spec = self._parsed.get(digest)
        if spec is None:
            try:
                spec = kinds.parse(label_config)
            except UnsupportedLabelConfig as exc:
                raise ProtocolError(str(exc), status=422) from exc
            self._parsed.put(digest, spec, len(encoded))
        return spec, len(encoded)

    def for_project(self, project_id: int) -> Spec | None:
        return self._projects.get(project_id)
