"""Named entities (spans) on a `<Text>`: the pure building blocks of the span task kind.

No I/O here: no Redis, no Label Studio, no HTTP. Offsets are Python `str` indices, code points, which
is what Label Studio 1.23 stores for `<Text>` regions (its editor converts the browser's UTF-16 positions
to code points before saving: libs/editor/src/utils/selection-tools.js, `fixCodePointsInRange`).

- span.py        the Span value and overlap resolution
- offsets.py     LLM mentions -> character offsets in the exact task text
- bio.py         tokens with offsets, BIO tags <-> spans, LS `labels` results read and built
- metrics.py     entity-level precision / recall / F1, whole-task agreement, span calibration
- strategies.py  per-task sequence uncertainty for the query strategies (MNLP, token entropy, ...)
- crf.py         the student: a linear-chain CRF (sklearn-crfsuite) with span confidences
"""

from backend.spans.span import Span, resolve_overlaps

__all__ = ["Span", "resolve_overlaps"]
