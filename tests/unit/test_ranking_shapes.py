"""The rank job's pieces that depend on the task shape (single- or multi-label), without Redis or LS."""

from __future__ import annotations

import numpy as np

from backend.jobs.ranking import bootstrap_committee
from backend.labeling import Example, parse_label_config
from tests.helpers import MULTI

SPEC = parse_label_config(MULTI)


def test_a_multi_label_committee_fits_on_resamples_whose_sets_differ_beyond_their_first_label() -> None:
    # every task is about sports; whether it is also about politics or tech is what there is to learn
    topics = [("Sports",), ("Sports", "Politics"), ("Sports", "Tech"), ("Sports", "Politics", "Tech")]
    words = {"Sports": "the match and the goal", "Politics": "the election vote", "Tech": "new software code"}
    human = [Example(i, " ".join(words[t] for t in labels) + f" story {i}", labels)
             for i, labels in enumerate(topics * 3)]  # fmt: skip
    texts = ["the election vote story x", "new software code story y"]
    committee = bootstrap_committee(SPEC, human, texts)
    assert len(committee) == 5 and all(member.shape == (2, 3) for member in committee)
    # one label set throughout: no label is seen both ways, so no member can be fitted
    assert bootstrap_committee(SPEC, [Example(i, f"story {i}", ("Sports", "Tech")) for i in range(6)], texts) == []
    assert np.all([member[:, 0] == 1.0 for member in committee])  # always-on Sports is a constant
