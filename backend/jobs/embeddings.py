"""A project's task embeddings, kept in Redis so that each task is encoded once.

Stored per task id with the digest of the text it was computed from: a task whose text changed is
encoded again, and the hash is shared by the server and every worker, on any machine, through the one
Redis. A row is 16 bytes of digest and 384 float16 values (784 bytes; 100k tasks take ~80 MB).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from backend.jobs.state import ProjectKeys
from backend.student.encoder import NO_ENCODER, SentenceEncoder, get_encoder, text_digest

DIGEST_BYTES = 16
READ_CHUNK = 5_000  # task ids per HMGET: one round trip each, without a reply of hundreds of MB
KEEP_EVERY = 512  # texts encoded between writes: ~3 s of short texts, ~60 s of news-length ones on 2 cores


def project_embeddings(ctx: Any, project_id: int) -> ProjectEmbeddings | None:
    """The project's embeddings under the configured encoder (STUDENT_ENCODER), None when it is `none`."""
    name = ctx.settings.student_encoder
    return None if name == NO_ENCODER else ProjectEmbeddings(ctx.conn, project_id, name)


class ProjectEmbeddings:
    """Embeddings of one project's tasks under one encoder."""

    def __init__(self, conn: Any, project_id: int, encoder: str | SentenceEncoder) -> None:
        self.conn = conn
        self.encoder = get_encoder(encoder) if isinstance(encoder, str) else encoder
        self.key = ProjectKeys(project_id).embeddings(self.encoder.name)

    def of(
        self,
        task_ids: Sequence[int | None],
        texts: Sequence[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """(n, dim) float32 rows for these tasks: the kept ones, the rest encoded now and kept.

        A task id of None (a task LS sent without one) is encoded and not kept. `progress(done, total)`
        follows the encoding of the tasks that had none.
        """
        if len(task_ids) != len(texts):
            raise ValueError(f"{len(task_ids)} task ids but {len(texts)} texts")
        out = np.zeros((len(texts), self.encoder.dim), dtype=np.float32)
        digests = [text_digest(text) for text in texts]
        missing = [row for row, task in enumerate(task_ids) if task is None]
        known = [row for row, task in enumerate(task_ids) if task is not None]
        for start in range(0, len(known), READ_CHUNK):
            rows = known[start : start + READ_CHUNK]
            for row, raw in zip(rows, self.conn.hmget(self.key, [int(task_ids[r]) for r in rows]), strict=True):
                if raw is not None and raw[:DIGEST_BYTES] == digests[row]:
                    out[row] = np.frombuffer(raw, dtype=np.float16, offset=DIGEST_BYTES)
                else:
                    missing.append(row)
        if missing:
            missing.sort()
            out[missing] = self._encode_and_keep(task_ids, texts, digests, missing, progress)
        return out

    def _encode_and_keep(
        self,
        task_ids: Sequence[int | None],
        texts: Sequence[str],
        digests: Sequence[bytes],
        rows: list[int],
        progress: Callable[[int, int], None] | None,
    ) -> np.ndarray:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, len(rows))

        out = np.zeros((len(rows), self.encoder.dim), dtype=np.float16)
        for start in range(0, len(rows), KEEP_EVERY):  # kept as they come: a job cut off keeps what it encoded
            chunk = rows[start : start + KEEP_EVERY]
            # kept as float16 and returned as kept: a task's features do not depend on whether it was cached
            encoded = self.encoder.encode([texts[row] for row in chunk], advance).astype(np.float16)
            out[start : start + len(chunk)] = encoded
            pairs = zip(chunk, encoded, strict=True)
            kept = {int(task): digests[row] + v.tobytes() for row, v in pairs if (task := task_ids[row]) is not None}
            if kept:
                self.conn.hset(self.key, mapping=kept)
        return out

    def count(self) -> int:
        return int(self.conn.hlen(self.key))
