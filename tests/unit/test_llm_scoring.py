"""Scoring labels from the first answer token: token -> label mapping, collisions, floors, renormalisation;
multi-label: P(yes) per label and the label set it decides."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.labeling import Example, parse_label_config
from backend.llm.client import prefix_order
from backend.llm.prompts import build_prompt, yes_no_question
from backend.llm.scoring import (
    answer_keys,
    first_token_distribution,
    key_matches,
    label_set,
    names_collide,
    scoreable,
    yes_probability,
)
from backend.student.model import decide

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


def test_a_multi_label_prompt_asks_one_yes_no_question_per_label_after_the_item() -> None:
    spec = parse_label_config(CONFIG.replace('choice="single"', 'choice="multiple"'))
    shots = [Example(1, "a match", ("Sports",)), Example(2, "a phone", ("Tech",))]
    prompt = build_prompt(spec, "a new running shoe", shots, scored=True, multilabel_scoring="yesno")
    assert prompt.keys == () and prompt.questions == tuple(yes_no_question(label) for label in spec.labels)
    system = prompt.messages[0]["content"]
    assert "- Sports: games" in system and "- Sportswear" in system and "Answer yes or no only" in system
    # each example is asked about one label, alternately one it has (yes) and one it lacks (no)
    turns = prompt.messages[1:-1]
    assert [m["content"] for m in turns if m["role"] == "assistant"] == ["yes", "no"]
    assert turns[0]["content"].endswith(yes_no_question("Sports")) and turns[2]["content"].endswith(
        yes_no_question("Sports"))  # fmt: skip
    # the k requests about one item share everything up to the question, which comes last
    asked = [prompt.asking(i) for i in range(3)]
    assert all(a[:-1] == prompt.messages[:-1] for a in asked)
    assert [a[-1]["content"] for a in asked] == [f"{prompt.messages[-1]['content']}\n\n{q}" for q in prompt.questions]
    assert asked[0][-1]["content"].startswith("<<<TEXT\na new running shoe\nTEXT>>>")
    # without logprobs the same item is asked for JSON, as before
    fallback = prompt.fallback
    assert fallback is not None and fallback.questions == () and '"labels"' in fallback.messages[0]["content"]
    assert fallback.messages[-1] == prompt.messages[-1]
    assert build_prompt(spec, "text").questions == ()  # not scored: the JSON prompt itself


def test_multi_label_prompts_stay_json_when_scoring_is_asked_by_default() -> None:
    spec = parse_label_config(CONFIG.replace('choice="single"', 'choice="multiple"'))
    prompt = build_prompt(spec, "text", scored=True)
    assert prompt.keys == () and prompt.questions == () and prompt.fallback is None
    assert '"labels"' in prompt.messages[0]["content"] and prompt == build_prompt(spec, "text")


def test_p_yes_sums_case_space_and_punctuation_variants_and_renormalises_over_yes_and_no() -> None:
    shown = top(("Yes", 0.5), (" yes", 0.1), ("YES.", 0.05), ("No", 0.2), (" no", 0.05), ("The", 0.1))
    assert yes_probability(shown) == pytest.approx(0.65 / 0.9)
    # words that only start with the letters are neither answer
    assert yes_probability(top(("yesterday", 0.6), ("Yes", 0.2), ("Nope", 0.1), ("No", 0.1))) == pytest.approx(
        2 / 3)  # fmt: skip


def test_p_yes_floors_the_answer_not_shown_and_is_none_when_neither_is() -> None:
    assert yes_probability(top(("Yes", 0.9), ("Maybe", 0.02), ("I", 0.01))) == pytest.approx(0.9 / 0.91)
    assert yes_probability(top(("no", 0.7), ("Not", 0.05))) == pytest.approx(0.05 / 0.75)
    assert yes_probability(top(("The", 0.7), ("Sports", 0.2))) is None


def test_a_label_set_is_every_label_at_half_or_more_scored_as_that_exact_set() -> None:
    labels = ("a", "b", "c")
    assert label_set([0.9, 0.5, 0.2], labels) == (("a", "b"), pytest.approx(0.9 * 0.5 * 0.8))
    assert label_set([0.1, 0.4, 0.3], labels) == (("b",), pytest.approx(0.9 * 0.4 * 0.7))  # none: the likeliest
    with pytest.raises(ValueError):
        label_set([0.5], labels)


def test_a_label_set_is_decided_as_the_multi_label_student_decides() -> None:
    rng = np.random.default_rng(0)
    labels = ("a", "b", "c", "d")
    for row in rng.random((200, 4)) ** 2:
        decided = decide(row, labels, multi_label=True)
        assert label_set(list(row), labels) == (decided.labels, pytest.approx(decided.score))


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
