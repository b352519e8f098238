"""SSML and pause tags (shared/ssml.py, shared/spoken.py): what a document is said as, segment by segment; hostile and
malformed documents refused fast, naming the line. The audio of a break and a document's voices and languages on a
real farm: tests/test_ssml_farm.py."""

from __future__ import annotations

import time

import pytest

from shared import ssml
from shared.spoken import Segment, segments_of
from shared.xml_documents import MAX_DEPTH


def said(document: str, language: str = "en", normalize: str = "auto") -> list[Segment]:
    parsed = ssml.parse(document, language) if ssml.looks_like_ssml(document) else ssml.plain_text_spans(document)
    return segments_of(parsed.spans, language, normalize, "drop").segments  # type: ignore[arg-type]


def refusal(document: str) -> ssml.InvalidSsml:
    with pytest.raises(ssml.InvalidSsml) as caught:
        ssml.parse(document, "en")
    return caught.value


# --- what is said ---------------------------------------------------------------------------------------------------
def test_a_break_is_a_pause_segment_between_the_words_around_it() -> None:
    assert said('<speak>Hello there.<break time="700ms"/>How are you?</speak>') == [
        Segment("Hello there.", "en"),
        Segment("", "en", pause_ms=700),
        Segment("How are you?", "en"),
    ]


@pytest.mark.parametrize(
    ("tag", "ms"),
    [
        ('<break time="1.5s"/>', 1500),
        ('<break time="250ms"/>', 250),
        ('<break strength="x-weak"/>', 250),
        ('<break strength="strong"/>', 1000),
        ("<break/>", 750),  # medium
    ],
)
def test_break_lengths(tag: str, ms: int) -> None:
    assert said(f"<speak>One.{tag}Two.</speak>")[1] == Segment("", "en", pause_ms=ms)


def test_a_break_of_strength_none_and_breaks_in_a_row() -> None:
    assert said('<speak>One. <break strength="none"/>Two.</speak>') == [Segment("One. Two.", "en")]
    assert said('<speak>One.<break time="6s"/><break time="6s"/>Two.</speak>')[1].pause_ms == ssml.MAX_BREAK_MS


def test_plain_text_pause_tags() -> None:
    assert said("Wait for it [pause:0.5s] now! [PAUSE:700ms]") == [
        Segment("Wait for it", "en"),
        Segment("", "en", pause_ms=500),
        Segment("now!", "en"),
        Segment("", "en", pause_ms=700),
    ]


def test_lang_voice_and_prosody_spans_become_segments_of_their_own() -> None:
    document = """<speak xmlns="http://www.w3.org/2001/10/synthesis" version="1.0" xml:lang="en-US">
      <p>Hello.</p>
      <voice name="Ana Florence"><lang xml:lang="de-DE">Guten Tag.</lang> Good day.</voice>
      <prosody rate="slow">Slowly now.</prosody> <prosody rate="+50%">Quick!</prosody>
    </speak>"""
    assert said(document) == [
        Segment("Hello.", "en"),
        Segment("Guten Tag.", "de", voice="Ana Florence"),
        Segment("Good day.", "en", voice="Ana Florence"),
        Segment("Slowly now.", "en", speed=0.75),
        Segment("Quick!", "en", speed=1.5),
    ]


@pytest.mark.parametrize(
    ("inner", "spoken"),
    [
        ('<say-as interpret-as="characters">IBM</say-as>', "I B M"),
        ('<say-as interpret-as="spell-out">ab1</say-as>', "A B one"),
        ('<say-as interpret-as="cardinal">1234</say-as>', "one thousand, two hundred and thirty-four"),
        ('<say-as interpret-as="ordinal">21</say-as>', "twenty-first"),
        ('<say-as interpret-as="digits">1234</say-as>', "one two three four"),
        ('<say-as interpret-as="telephone">555-0199</say-as>', "five five five, zero one nine nine"),
        ('<say-as interpret-as="date">2024-03-15</say-as>', "March fifteenth, twenty twenty-four"),
        ('<say-as interpret-as="time">9:05 pm</say-as>', "nine oh five p m"),
        ('<sub alias="World Wide Web">WWW</sub>', "World Wide Web"),
        ("<emphasis>really</emphasis>", "really"),
    ],
)
def test_say_as_sub_and_emphasis_in_english(inner: str, spoken: str) -> None:
    assert said(f"<speak>Say {inner}.</speak>") == [Segment(f"Say {spoken}.", "en")]


@pytest.mark.parametrize(
    ("language", "inner", "spoken"),
    [
        ("de", '<say-as interpret-as="cardinal">21</say-as>', "einundzwanzig"),
        ("fr", '<say-as interpret-as="ordinal">2</say-as>', "deuxième"),
        ("es", '<say-as interpret-as="digits">42</say-as>', "cuatro dos"),
    ],
)
def test_say_as_in_the_span_language(language: str, inner: str, spoken: str) -> None:
    assert said(f"<speak>{inner}</speak>", language) == [Segment(spoken, language)]


def test_a_german_span_is_normalised_in_german() -> None:
    assert said('<speak>I paid 5 euros. <lang xml:lang="de">Ich habe 5 Euro bezahlt.</lang></speak>') == [
        Segment("I paid five euros.", "en"),
        Segment("Ich habe fünf Euro bezahlt.", "de"),
    ]


def test_unknown_tags_are_left_out_with_a_warning_and_their_text_said() -> None:
    parsed = ssml.parse(
        '<speak>A <audio src="http://127.0.0.1:9/x.wav">bell</audio> and <vendor:x xmlns:vendor="urn:v">tag</vendor:x>'
        '<mark name="m"/>.</speak>',
        "en",
    )
    spoken = segments_of(parsed.spans, "en", "auto", "drop")
    assert [s.text for s in spoken.segments] == ["A bell and tag."]
    assert parsed.warnings == [
        "<audio> is never fetched: its text (if any) was said instead",
        "<x> is not SSML the farm speaks: the tag was left out, its text said",
        "<mark> was left out (the farm sends no mark events)",
    ]


def test_markup_is_never_read_as_text() -> None:
    spoken = " ".join(
        s.text for s in said('<speak><p><s>One</s><s>two</s></p><emphasis level="strong">three</emphasis></speak>')
    )
    assert "<" not in spoken and "emphasis" not in spoken and spoken == "One two three"


# --- what is refused ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("document", "line", "says"),
    [
        ("<speak>\nHello <b>there\n</speak>", 3, "mismatched tag"),
        ("<speak>Hello", 1, "no element found"),
        ("<speak>\n\nTom &amp; Jerry &nbsp;</speak>", 3, "undefined entity"),
        ('<speak>\n<break time="fast"/></speak>', 2, "700ms or 1.5s"),
        ('<speak><break time="11s"/></speak>', 1, "10000 ms"),
        ('<speak><break strength="loud"/></speak>', 1, "x-strong"),
        ('<speak>\n<say-as interpret-as="cipher">x</say-as></speak>', 2, "interpret-as"),
        ("<speak><sub>WWW</sub></speak>", 1, "alias"),
        ("<speak><lang>Hallo</lang></speak>", 1, "xml:lang"),
        ('<speak><lang xml:lang="12">x</lang></speak>', 1, "language tag"),
        ("<speak><voice>x</voice></speak>", 1, "name"),
        ('<speak><prosody rate="warp">x</prosody></speak>', 1, "x-slow"),
        ('<speak><prosody rate="x-slow"><prosody rate="20%">x</prosody></prosody></speak>', 1, "0.25-4.0"),
        ("<speak><speak>x</speak></speak>", 1, "inside <speak>"),
        ("<voice name='a'>x</voice>", 1, "root element"),
    ],
)
def test_malformed_ssml_is_refused_naming_its_line(document: str, line: int, says: str) -> None:
    error = refusal(document)
    assert error.code == "invalid_ssml" and error.status == 400
    assert error.details["line"] == line and f"line {line}" in error.message and says in error.message, error.message


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<speak>&lol9;</speak>"""


@pytest.mark.parametrize(
    "document",
    [
        BILLION_LAUGHS,
        '<?xml version="1.0"?>\n<!DOCTYPE speak [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n<speak>&xxe;</speak>',
        '<?xml version="1.0"?>\n<!DOCTYPE speak SYSTEM "http://127.0.0.1:9/speak.dtd">\n<speak>x</speak>',
    ],
    ids=["billion-laughs", "external-entity", "external-dtd"],
)
def test_entities_and_dtds_are_refused_before_anything_is_expanded_or_fetched(document: str) -> None:
    started = time.perf_counter()
    error = refusal(document)
    assert "DTD or entity" in error.message and error.details["line"] == 2
    print(f"refused in {time.perf_counter() - started:.4f} s")  # no bound asserted: a timing test proves nothing here


def test_ten_thousand_nested_tags_are_refused_as_they_are_read() -> None:
    document = "<speak>" + "<emphasis>" * 10_000 + "x" + "</emphasis>" * 10_000 + "</speak>"
    error = refusal(document)
    assert f"nested deeper than {MAX_DEPTH}" in error.message
    # Refused at the depth limit, not after the whole document: as deep as allowed, it is read.
    allowed = "<speak>" + "<emphasis>" * (MAX_DEPTH - 1) + "x" + "</emphasis>" * (MAX_DEPTH - 1) + "</speak>"
    assert said(allowed) == [Segment("x", "en")]


def test_too_many_pauses_are_refused() -> None:
    with pytest.raises(ssml.InvalidSsml, match="pauses"):
        said("<speak>" + "a<break/>" * (ssml.MAX_PAUSES + 1) + "</speak>")
    with pytest.raises(ssml.InvalidSsml, match="pauses"):
        said("a [pause:1s] " * (ssml.MAX_PAUSES + 1))
    with pytest.raises(ssml.InvalidSsml, match="10000 ms"):
        said("a [pause:11s] b")


def test_a_text_that_does_not_start_with_speak_is_plain_text() -> None:
    assert not ssml.looks_like_ssml("I <3 you, x < y")
    assert ssml.looks_like_ssml('  <speak version="1.0">x</speak>') and ssml.looks_like_ssml(
        "<?xml version='1.0'?><speak/>"
    )


# --- over HTTP ------------------------------------------------------------------------------------------------------
def test_the_normalize_endpoint_shows_the_pauses_voices_languages_and_speeds_of_a_document(client) -> None:
    document = (
        '<speak>It costs $5.<break time="300ms"/><voice name="ash"><lang xml:lang="fr">Bonjour.</lang></voice>'
        '<prosody rate="fast">Fast.</prosody><mark name="x"/></speak>'
    )
    answer = client.post("/v1/text/normalize", json={"input": document, "language": "en", "voice": "alloy"})
    assert answer.status_code == 200, answer.json
    assert answer.json == {
        "segments": [
            {"text": "It costs five dollars.", "language": "en", "voice": "alloy", "speed": None, "pause_ms": 0},
            {"text": "", "language": "en", "voice": "alloy", "speed": None, "pause_ms": 300},
            {"text": "Bonjour.", "language": "fr", "voice": "ash", "speed": None, "pause_ms": 0},
            {"text": "Fast.", "language": "en", "voice": "alloy", "speed": 1.25, "pause_ms": 0},
        ],
        "warnings": ["<mark> was left out (the farm sends no mark events)"],
        "lexicons": [],
    }
    # Said as text when asked: the markup is then text for the markdown parser (which reads no HTML) to leave out.
    as_text = client.post("/v1/text/normalize", json={"input": document, "language": "en", "input_format": "text"})
    assert as_text.status_code == 200 and all(s["pause_ms"] == 0 for s in as_text.json["segments"])


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"input": "<speak>\n\n<b>x</speak>", "language": "en"}, "invalid_ssml"),
        ({"input": BILLION_LAUGHS, "language": "en"}, "invalid_ssml"),
        ({"input": "Hello.", "language": "en", "input_format": "ssml"}, "invalid_ssml"),  # not XML at all
        ({"input": "<speak><break/></speak>", "language": "en"}, "nothing_to_speak"),
        ({"input": '<speak><lang xml:lang="xx-YY">Hi.</lang></speak>', "language": "en"}, "unknown_language"),
    ],
)
def test_the_normalize_endpoint_refuses_bad_ssml_with_the_error_contract(client, body: dict, code: str) -> None:
    answer = client.post("/v1/text/normalize", json=body)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["code"] == code, answer.json
