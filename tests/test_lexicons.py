"""Pronunciation lexicons: a tenant's respellings (shared/lexicons.py), kept under /lexicons, imported and exported
as W3C PLS, applied to its requests before normalisation: what /v1/text/normalize shows and what the workers say.
Another tenant never sees or uses them: tests/test_tenants.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import requests

from shared.lexicons import Entry, Lexicon, respeller
from shared.pls import PLS_NAMESPACE, InvalidLexicon, read_pls, write_pls
from tests.audio import read_wav, xtts_samples
from tests.test_ssml import BILLION_LAUGHS
from tools.localfarm import DEV_SPEAKER, Farm


def respell(text: str, *entries: Entry, language: str = "en") -> str:
    return respeller([Lexicon("test", None, entries)], language).apply(text)


# --- matching -------------------------------------------------------------------------------------------------------
def test_an_entry_respells_whole_words_in_any_case() -> None:
    nguyen = Entry("Nguyen", "Win")
    assert respell("Mr Nguyen and NGUYEN met nguyen.", nguyen) == "Mr Win and Win met Win."
    assert respell("Nguyenson and aNguyen stay", nguyen) == "Nguyenson and aNguyen stay"


def test_case_sensitive_and_partial_entries() -> None:
    it = Entry("IT", "I T", case_sensitive=True)
    assert respell("IT said it.", it) == "I T said it."
    ph = Entry("ph", "f", whole_word=False)
    assert respell("Phone a philosopher", ph) == "fone a filosofer"


def test_the_longest_grapheme_wins_and_graphemes_are_literal() -> None:
    entries = (Entry("New York", "Noo York"), Entry("New York City", "the Big Apple"), Entry("C++", "C plus plus"))
    assert respell("New York City, New York, C++ and C+", *entries) == "the Big Apple, Noo York, C plus plus and C+"
    assert respell("a.b axb", Entry("a.b", "A dot B")) == "A dot B axb"


def test_the_first_lexicon_named_wins_a_word_two_respell() -> None:
    first, second = Lexicon("first", None, (Entry("Xi", "She"),)), Lexicon("second", None, (Entry("xi", "Zai"),))
    assert respeller([first, second], "en").apply("Xi") == "She"
    assert respeller([second, first], "en").apply("Xi") == "Zai"


def test_a_lexicon_of_one_language_respells_only_text_in_it() -> None:
    german = Lexicon("de", "de", (Entry("Chemie", "Kemie"),))
    assert respeller([german], "de").apply("Chemie") == "Kemie"
    assert respeller([german], "en").apply("Chemie") == "Chemie"


def test_thousands_of_entries_compile_into_one_pass() -> None:
    entries = tuple(Entry(f"name{i}", f"alias {i}") for i in range(5000))
    text = "name1 and name4999, not name50000. " * 2000
    said = respell(text, *entries)
    assert said.startswith("alias 1 and alias 4999, not name50000. ") and said.count("alias") == 4000


# --- PLS ------------------------------------------------------------------------------------------------------------
PLS = f"""<?xml version="1.0" encoding="UTF-8"?>
<lexicon version="1.0" xmlns="{PLS_NAMESPACE}" alphabet="ipa" xml:lang="en-US">
  <meta name="author" content="someone"/>
  <lexeme>
    <grapheme>W3C</grapheme>
    <grapheme>w3c</grapheme>
    <alias>World Wide Web Consortium</alias>
  </lexeme>
  <lexeme>
    <grapheme>Nguyen</grapheme>
    <phoneme>wɪn</phoneme>
    <alias>Win</alias>
  </lexeme>
</lexicon>"""


def test_a_pls_file_gives_an_entry_per_grapheme_with_its_alias() -> None:
    language, entries = read_pls(PLS)
    assert language == "en-US"
    assert entries == [
        Entry("W3C", "World Wide Web Consortium"),
        Entry("w3c", "World Wide Web Consortium"),
        Entry("Nguyen", "Win"),
    ]


def test_a_written_pls_file_is_valid_pls_and_reads_back_the_same() -> None:
    entries = [Entry("IT", "I T", case_sensitive=True), Entry("ph", "f", whole_word=False), Entry("A & B", "A and B")]
    document = write_pls("en", entries)
    root = ET.fromstring(document)
    assert root.tag == f"{{{PLS_NAMESPACE}}}lexicon" and root.get("version") == "1.0"
    assert [lexeme.find(f"{{{PLS_NAMESPACE}}}alias").text for lexeme in root] == ["I T", "f", "A and B"]  # type: ignore[union-attr]
    assert read_pls(document) == ("en", entries)


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (
            f'<lexicon xmlns="{PLS_NAMESPACE}" version="1.0">\n<lexeme><grapheme>tomato</grapheme>\n'
            "<phoneme>təˈmɑːtoʊ</phoneme></lexeme></lexicon>",
            "phonemes and no alias",
        ),
        ("<lexicon><lexeme><alias>x</alias></lexeme></lexicon>", "needs a non-empty <grapheme>"),
        ("<speak>x</speak>", "not <lexicon>"),
        ("<lexicon>\n<lexeme>", "line 2"),
        (BILLION_LAUGHS.replace("speak", "lexicon"), "DTD or entity"),
    ],
)
def test_unusable_pls_files_are_refused_saying_why(document: str, says: str) -> None:
    with pytest.raises(InvalidLexicon, match=says) as caught:
        read_pls(document)
    assert caught.value.code == "invalid_lexicon"
    if says == "phonemes and no alias":
        assert "'tomato' (line 2)" in caught.value.message


# --- over HTTP ------------------------------------------------------------------------------------------------------
@pytest.fixture
def lexicons(client) -> Iterator:
    """The test client; every lexicon a test makes is deleted afterwards (the default tenant's lexicons apply to
    every request that names none)."""
    yield client
    for summary in client.get("/lexicons").json["lexicons"]:
        client.delete(f"/lexicons/{summary['name']}")


def test_lexicons_are_created_read_listed_exported_replaced_and_deleted(lexicons) -> None:
    body = {"language": "en", "entries": [{"grapheme": "Nguyen", "alias": "Win"}]}
    created = lexicons.put("/lexicons/names", json=body)
    assert created.status_code == 201, created.json
    assert created.json["entries"] == [
        {"grapheme": "Nguyen", "alias": "Win", "case_sensitive": False, "whole_word": True}
    ]
    assert lexicons.get("/lexicons/names").json["language"] == "en"
    listed = lexicons.get("/lexicons").json["lexicons"]
    assert [(x["name"], x["language"], x["entries"]) for x in listed] == [("names", "en", 1)]
    exported = lexicons.get("/lexicons/names/pls")
    assert exported.mimetype == "application/pls+xml" and read_pls(exported.text) == ("en", [Entry("Nguyen", "Win")])

    replaced = lexicons.put("/lexicons/names", json={"pls": PLS})
    assert replaced.status_code == 200 and len(replaced.json["entries"]) == 3
    assert replaced.json["language"] == "en"  # the PLS file's xml:lang, as an XTTS language
    assert lexicons.delete("/lexicons/names").json == {"deleted": "names"}
    assert lexicons.get("/lexicons/names").status_code == 404
    assert lexicons.delete("/lexicons/names").status_code == 404


@pytest.mark.parametrize(
    ("name", "body", "status", "code"),
    [
        ("ok", {"entries": [], "pls": PLS}, 400, "validation_error"),
        ("ok", {}, 400, "validation_error"),
        ("ok", {"entries": [{"grapheme": " ", "alias": "x"}]}, 400, "validation_error"),
        ("ok", {"entries": [{"grapheme": "x" * 101, "alias": "x"}]}, 400, "validation_error"),
        ("ok", {"entries": [{"grapheme": "a", "alias": "b", "phoneme": "c"}]}, 400, "validation_error"),
        ("ok", {"language": "xx", "entries": []}, 400, "unknown_language"),
        (
            "ok",
            {"pls": "<lexicon><lexeme><grapheme>a</grapheme><phoneme>b</phoneme></lexeme></lexicon>"},
            400,
            "invalid_lexicon",
        ),
        ("-bad", {"entries": []}, 400, "invalid_input"),
    ],
)
def test_bad_lexicons_are_refused_with_the_error_contract(lexicons, name: str, body: dict, status: int, code: str):
    answer = lexicons.put(f"/lexicons/{name}", json=body)
    assert answer.status_code == status, answer.json
    assert answer.json["error"]["code"] == code, answer.json


def test_a_tenant_has_at_most_twenty_lexicons(lexicons) -> None:
    for i in range(20):
        assert lexicons.put(f"/lexicons/l{i}", json={"entries": []}).status_code == 201
    refused = lexicons.put("/lexicons/one-more", json={"entries": []})
    assert refused.status_code == 409 and refused.json["error"]["code"] == "too_many_lexicons"
    assert lexicons.put("/lexicons/l0", json={"entries": []}).status_code == 200  # replacing one is fine


def test_a_lexicon_changes_what_normalize_answers_and_requests_choose_theirs(lexicons) -> None:
    lexicons.put("/lexicons/brands", json={"entries": [{"grapheme": "Kubernetes", "alias": "koo-ber-net-eez"}]})
    lexicons.put("/lexicons/units", json={"entries": [{"grapheme": "5 GB", "alias": "five gigs"}]})
    text = "Kubernetes needs 5 GB."

    def said(**extra: object) -> tuple[str, list[str]]:
        answer = lexicons.post("/v1/text/normalize", json={"input": text, "language": "en", **extra})
        assert answer.status_code == 200, answer.json
        return answer.json["segments"][0]["text"], answer.json["lexicons"]

    # Every lexicon of the tenant when a request names none; the entry applies before normalisation (5 GB).
    assert said() == ("koo-ber-net-eez needs five gigs.", ["brands", "units"])
    assert said(lexicons=["brands"]) == ("koo-ber-net-eez needs five gigabytes.", ["brands"])
    assert said(lexicons=[]) == ("Kubernetes needs five gigabytes.", [])
    # SSML's text is respelled too; a <sub> alias is not (it already says what to say).
    ssml = '<speak>Kubernetes <sub alias="Kubernetes">K8s</sub></speak>'
    answer = lexicons.post("/v1/text/normalize", json={"input": ssml, "language": "en"})
    assert answer.json["segments"][0]["text"] == "koo-ber-net-eez Kubernetes"
    unknown = lexicons.post("/v1/text/normalize", json={"input": text, "language": "en", "lexicons": ["nope"]})
    assert unknown.status_code == 400 and unknown.json["error"]["code"] == "unknown_lexicon"
    # A replaced lexicon is used as it is now (compiled lexicons are kept by revision).
    lexicons.put("/lexicons/brands", json={"entries": [{"grapheme": "Kubernetes", "alias": "K eights"}]})
    assert said(lexicons=["brands"]) == ("K eights needs five gigabytes.", ["brands"])


def test_the_workers_say_the_respelled_text(farm: Farm) -> None:
    """The dev model says N characters in round(1.5 N) tokens when no length is asked for: the audio's length shows
    the worker was given the alias, not the word."""
    from workers.engine import DEV_TOKENS_PER_CHAR

    entry = {"grapheme": "Nguyen", "alias": "Winnie the long respelling"}
    assert requests.put(farm.url("/lexicons/people"), json={"entries": [entry]}, timeout=30).status_code == 201
    try:
        for lexicons, said in (([], "Hello Nguyen."), (["people"], "Hello Winnie the long respelling.")):
            body = {"text": "Hello Nguyen.", "language": "en", "speaker_id": DEV_SPEAKER, "lexicons": lexicons}
            made = requests.post(farm.url("/tts"), json=body, timeout=120)
            assert made.status_code == 200, made.text
            expected = xtts_samples(max(8, round(len(said) * DEV_TOKENS_PER_CHAR)))
            assert read_wav(made.content)[1] == expected, lexicons
    finally:
        requests.delete(farm.url("/lexicons/people"), timeout=30)
