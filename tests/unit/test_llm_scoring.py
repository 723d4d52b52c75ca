"""Scoring labels from the first answer token: token -> label mapping, collisions, floors, renormalisation."""

from __future__ import annotations

import math

import pytest

from backend.labeling import Example, parse_label_config
from backend.llm.client import prefix_order
from backend.llm.prompts import build_prompt
from backend.llm.scoring import answer_keys, first_token_distribution, key_matches, names_collide, scoreable

LABELS = ("Positive", "Negative", "Neutral")


def top(*pairs: tuple[str, float]) -> list[tuple[str, float]]:
    return [(token, math.log(p)) for token, p in pairs]


def test_case_and_space_variants_of_a_label_token_are_summed() -> None:
    scored = first_token_distribution(top(("Positive", 0.5), (" positive", 0.1), ("Neg", 0.3), ("Neutral", 0.1)),
                                      LABELS, LABELS)  # fmt: skip
    assert scored is not None and scored.ambiguous == 0
    assert scored.distribution == pytest.approx({"Positive": 0.6, "Negative": 0.3, "Neutral": 0.1})


def test_tokens_that_start_no_label_are_dropped_and_the_rest_renormalised() -> None:
    scored = first_token_distribution(top(("The", 0.5), ('{"', 0.2), ("Negative", 0.2), ("Neutral", 0.1)),
                                      LABELS[1:], LABELS[1:])  # fmt: skip
    assert scored is not None
    assert scored.distribution == pytest.approx({"Negative": 2 / 3, "Neutral": 1 / 3})


def test_a_label_missing_from_the_top_tokens_gets_the_least_shown_probability() -> None:
    scored = first_token_distribution(top(("Positive", 0.9), ("The", 0.01)), LABELS, LABELS)
    assert scored is not None
    assert scored.distribution["Negative"] == pytest.approx(0.01 / 0.92)
    assert scored.distribution["Neutral"] == scored.distribution["Negative"]
    assert sum(scored.distribution.values()) == pytest.approx(1.0)
    assert max(scored.distribution, key=scored.distribution.__getitem__) == "Positive"


def test_no_token_starting_a_label_gives_no_distribution() -> None:
    assert first_token_distribution(top(("{", 0.9), ("The", 0.1)), LABELS, LABELS) is None


def test_a_token_several_labels_start_is_split_and_reported_ambiguous() -> None:
    labels = ("Sports", "Sportswear", "Tech")
    scored = first_token_distribution(top(("Sports", 0.6), ("Tech", 0.4)), labels, labels)
    assert scored is not None and scored.ambiguous == pytest.approx(0.6)
    assert scored.distribution == pytest.approx({"Sports": 0.3, "Sportswear": 0.3, "Tech": 0.4})


def test_codes_keep_colliding_labels_apart() -> None:
    labels = ("Sports", "Sportswear", "Tech")
    keys = answer_keys(labels, coded=True)
    assert keys == ("A", "B", "C")
    scored = first_token_distribution(top(("B", 0.7), (" b", 0.1), ("A.", 0.15), ("All", 0.05)), keys, labels)
    assert scored is not None and scored.ambiguous == 0
    assert scored.distribution["Sportswear"] == pytest.approx(0.8)  # "Tech" unseen: the floor, 0.05
    assert scored.distribution["Sports"] > scored.distribution["Tech"]


@pytest.mark.parametrize(
    ("token", "expected"),
    [("Pos", [0]), (" POSITIVE", [0]), ("Positive.", [0]), ("Positives", []), ("N", [1, 2]), ("\n", []), ("", [])],
)
def test_key_matches(token: str, expected: list[int]) -> None:
    assert key_matches(token, LABELS) == expected


@pytest.mark.parametrize(
    ("labels", "collide"),
    [(LABELS, False), (("Sports", "Sportswear"), True), (("Not spam", "Not sure"), True), (("Spam", "Not spam"), False),
     (("spam", "Spam!"), True)],
)  # fmt: skip
def test_names_collide_when_first_words_are_equal_or_prefixes(labels: tuple[str, ...], collide: bool) -> None:
    assert names_collide(labels) is collide


def test_only_two_to_26_non_empty_labels_are_scoreable() -> None:
    assert scoreable(("a", "b")) and not scoreable(("a",)) and not scoreable([f"l{i}" for i in range(27)])


CONFIG = """<View><Text name="text" value="$text"/><Choices name="c" toName="text" choice="single">
  <Choice value="Sports" hint="games"/><Choice value="Sportswear"/><Choice value="Tech"/></Choices></View>"""


def test_a_scored_prompt_puts_the_shared_part_first_and_the_item_last() -> None:
    spec = parse_label_config(CONFIG.replace("Sportswear", "Politics"))
    shots = [Example(1, "a match", ("Sports",)), Example(2, "a phone", ("Tech",))]
    prompts = [build_prompt(spec, text, shots, scored=True) for text in ("item one", "item two <<<TEXT")]
    assert prompts[0].keys == ("Sports", "Politics", "Tech") and prompts[0].coded is not None
    assert prompts[0].prefix() == prompts[1].prefix()  # everything but the item is shared
    assert [m["content"] for m in prompts[0].messages if m["role"] == "assistant"] == ["Sports", "Tech"]
    assert "Answer with the label only" in prompts[0].messages[0]["content"]
    assert prompts[1].messages[-1]["content"].count("<<<TEXT") == 1  # the item's fence is still defused
    coded = prompts[0].coded
    assert coded.keys == ("A", "B", "C") and "- A: Sports (games)" in coded.messages[0]["content"]
    assert [m["content"] for m in coded.messages if m["role"] == "assistant"] == ["A", "C"]


def test_colliding_label_names_are_scored_by_codes_from_the_start() -> None:
    prompt = build_prompt(parse_label_config(CONFIG), "a new running shoe", scored=True)
    assert prompt.keys == ("A", "B", "C") and prompt.coded is None
    assert "Answer with the letter of the label only" in prompt.messages[0]["content"]


def test_multi_label_prompts_stay_json_when_scoring_is_asked() -> None:
    spec = parse_label_config(CONFIG.replace('choice="single"', 'choice="multiple"'))
    prompt = build_prompt(spec, "text", scored=True)
    assert prompt.keys == () and '"labels"' in prompt.messages[0]["content"]


def test_a_shared_prefix_token_goes_to_the_label_not_shown_whole() -> None:
    # SmolLM2 spells "Negative" as one token and "Neutral" as "Ne" + "utral": "Ne" is Neutral's start
    scored = first_token_distribution(top(("Positive", 0.4), ("Ne", 0.24), ("N", 0.03), ("Negative", 0.012)),
                                      LABELS, LABELS)  # fmt: skip
    assert scored is not None and scored.ambiguous == 0
    assert scored.distribution == pytest.approx({"Positive": 0.4 / 0.682, "Negative": 0.012 / 0.682,
                                                 "Neutral": 0.27 / 0.682})  # fmt: skip


def test_requests_are_ordered_so_that_neighbours_share_the_longest_prefix() -> None:
    spec = parse_label_config(CONFIG.replace("Sportswear", "Politics"))
    a, b, c = (Example(i, text, ("Tech",)) for i, text in enumerate(("alpha", "beta", "gamma")))
    blocks = [[a, b], [c], [a, c], [a, b], [c]]
    prompts = [build_prompt(spec, f"item {i}", shots, scored=True) for i, shots in enumerate(blocks)]
    order = prefix_order(prompts)
    assert sorted(order) == list(range(5))
    assert [blocks[i] for i in order] == [[a, b], [a, b], [a, c], [c], [c]]  # [a, b] then [a, c]: "a" shared
    assert order[:2] == [0, 3] and order[3:] == [1, 4]  # stable within a block
