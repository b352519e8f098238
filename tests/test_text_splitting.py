"""Splitting long texts into segments XTTS can speak: nothing lost or reordered, every segment within its limit."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.languages import CHAR_LIMITS, XTTS_V2_LANGUAGES, char_limit
from shared.text import normalize_text, split_text

WORDS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs")), min_size=1, max_size=30)
PUNCT = st.sampled_from(
    ["", "", "", ".", ",", "!", "?", ";", ":", " —", "…", "。", "，", "！", "？", "、", "\n", "\n\n"]
)
TEXTS = st.lists(st.tuples(WORDS, PUNCT), min_size=0, max_size=300).map(lambda parts: " ".join(w + p for w, p in parts))


def _check(text: str, language: str, limit: int | None = None) -> list[str]:
    segments = split_text(text, language, limit)
    assert "".join(segments) == normalize_text(text), "characters lost, added or reordered"
    bound = limit or char_limit(language)
    assert all(0 < len(c.rstrip()) <= bound for c in segments), [len(c) for c in segments]
    return segments


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.sampled_from(XTTS_V2_LANGUAGES))
def test_generated_texts_keep_every_character_within_limits(text: str, language: str) -> None:
    _check(text, language)


@settings(max_examples=200, deadline=None)
@given(TEXTS, st.integers(min_value=1, max_value=40))
def test_tiny_limits_still_hold(text: str, limit: int) -> None:
    _check(text, "en", limit)


def test_sentences_are_not_cut_when_they_fit() -> None:
    text = "The first sentence is short. The second one is short too! And a third? " * 20
    for segment in _check(text, "en"):
        assert segment.rstrip()[-1] in ".!?"


def test_a_sentence_over_the_limit_is_cut_at_clauses_then_words() -> None:
    clause = "this clause has quite a few words in it"
    sentence = ", ".join([clause] * 12) + "."
    segments = _check(sentence, "en")
    assert len(segments) > 1
    assert all(c.rstrip().endswith((",", ".")) for c in segments)
    no_clauses = " ".join(["word"] * 200) + "."
    assert all(c.split(" ")[0] == "word" or c.startswith("word") for c in _check(no_clauses, "en"))


def test_text_without_punctuation_or_spaces() -> None:
    assert len(_check("a" * 1000, "en")) == 4  # a 1000-letter "word" is cut every 250 characters
    assert len(_check(" ".join(["unpunctuated"] * 300), "en")) > 1


def test_numbers_stay_whole() -> None:
    text = "In 2024 the farm served 1,234,567 requests at 99.9% uptime. " * 10
    for segment in _check(text, "en"):
        assert "1,234,567" in segment and "99.9%" in segment


@pytest.mark.parametrize("language", ["zh-cn", "ja", "ko"])
def test_cjk(language: str) -> None:
    sentences = {
        "zh-cn": "今天天气很好，我们去公园散步吧。",
        "ja": "今日はとても良い天気ですね。散歩に行きましょう！",
        "ko": "오늘은 날씨가 정말 좋네요. 공원에 산책하러 갑시다!",
    }[language]
    segments = _check(sentences * 30, language)
    assert len(segments) > 1
    assert all(c.rstrip()[-1] in "。！？.!" for c in segments)
    assert len(_check("字" * 500, language)) == -(-500 // char_limit(language))


def test_a_book_chapter() -> None:
    paragraph = (
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity. "
    )
    chapter = "\n\n".join([paragraph * 5] * 40)  # 200 sentences, about 35,000 characters
    assert len(chapter) > 30_000
    segments = _check(chapter, "en")
    assert len(segments) == 200  # one sentence of 174 characters per segment: two would pass the 250 limit


def test_limits_are_xttss() -> None:
    assert CHAR_LIMITS["en"] == 250 and CHAR_LIMITS["zh"] == 82 and CHAR_LIMITS["ja"] == 71
    assert char_limit("zh-cn") == 82 and char_limit("xx") == 250


ADVERSARIAL = {
    "dots": ".",
    "question marks and bangs": "?!",
    "dots and closing brackets": ".)",
    "a comma and closing quotes": ',"',
    "ellipses": "…",
    "cjk full stops": "。",
    "dashes": " — ",
}


@pytest.mark.parametrize("unit", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_runs_of_punctuation_split_in_linear_time(unit: str) -> None:
    """A run of terminal marks with no space after it made the sentence regex try every position of the run, each
    scanning to its end: quadratic (16 000 dots took 3 s, 100 000 minutes, holding the GIL). The smaller size comes
    first, so that a quadratic splitter fails here in seconds rather than minutes."""
    for size in (20_000, 100_000):
        text = "Begin " + unit * (size // len(unit)) + "end"  # no space after the run: nothing ends it
        started = time.perf_counter()
        _check(text, "en")
        assert time.perf_counter() - started < 1.0, f"{size} characters"
