"""Text normalisation: what is written is said as people say it, per language (shared/normalization.py), and
POST /v1/text/normalize shows exactly what a synthesis request would have the workers say."""

from __future__ import annotations

import time

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.normalization import normalize
from tests.audio import read_wav, xtts_samples
from tools.localfarm import DEV_SPEAKER, Farm

# Written -> said, in each language: numbers, dates, times, money, units, phone numbers, e-mail addresses and URLs.
SAID: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("1,234.5", "one thousand, two hundred and thirty-four point five"),
        ("-3", "minus three"),
        ("2024-03-15", "March fifteenth, twenty twenty-four"),
        ("03/15/2024", "March fifteenth, twenty twenty-four"),
        ("9:05 pm", "nine oh five p m"),
        ("14:30", "fourteen thirty"),
        ("$5.50", "five dollars and fifty cents"),
        ("€1", "one euro"),
        ("20%", "twenty percent"),
        ("100 km/h", "one hundred kilometers per hour"),
        ("21°C", "twenty-one degrees Celsius"),
        ("2.5 kg", "two point five kilograms"),
        ("21st", "twenty-first"),
        ("+1 555-123-4567", "plus one, five five five, one two three, four five six seven"),
        ("info@example.com", "info at example dot com"),
        ("https://www.example.com/docs", "example dot com slash docs"),
    ],
    "de": [
        ("1.234,5", "eintausendzweihundertvierunddreißig Komma fünf"),
        ("15.03.2024", "fünfzehnte März zweitausendvierundzwanzig"),
        ("14:30", "vierzehn Uhr dreißig"),
        ("5,50 €", "fünf Euro und fünfzig Cent"),
        ("20 %", "zwanzig Prozent"),
        ("100 km/h", "einhundert Kilometer pro Stunde"),
        ("2,5 kg", "zwei Komma fünf Kilogramm"),
        ("+49 30 1234567", "plus vier neun, drei null, eins zwei drei vier fünf sechs sieben"),
        ("info@beispiel.de", "info at beispiel Punkt de"),
        ("www.beispiel.de/preise", "beispiel Punkt de Schrägstrich preise"),
    ],
    "fr": [
        ("1 234,5", "mille deux cent trente-quatre virgule cinq"),
        ("15/03/2024", "quinze mars deux mille vingt-quatre"),
        ("2024-03-01", "premier mars deux mille vingt-quatre"),
        ("14:30", "quatorze heures trente"),
        ("5,50 €", "cinq euros et cinquante centimes"),
        ("20 %", "vingt pour cent"),
        ("2,5 kg", "deux virgule cinq kilogrammes"),
        ("2e", "deuxième"),
        ("+33 1 23 45 67 89", "plus trois trois, un, deux trois, quatre cinq, six sept, huit neuf"),
        ("info@exemple.fr", "info arobase exemple point fr"),
        ("www.exemple.fr/prix", "exemple point fr barre oblique prix"),
    ],
    "es": [
        ("1.234,5", "mil doscientos treinta y cuatro coma cinco"),
        ("15/03/2024", "quince de marzo de dos mil veinticuatro"),
        ("14:30", "catorce y treinta"),
        ("5,50 €", "cinco euros y cincuenta céntimos"),
        ("20 %", "veinte por ciento"),
        ("2,5 kg", "dos coma cinco kilogramos"),
        ("+34 912-345-678", "más tres cuatro, nueve uno dos, tres cuatro cinco, seis siete ocho"),
        ("info@ejemplo.es", "info arroba ejemplo punto es"),
        ("www.ejemplo.es/precios", "ejemplo punto es barra precios"),
    ],
    "it": [
        ("1.234,5", "milleduecentotrentaquattro virgola cinque"),
        ("15/03/2024", "quindici marzo duemilaventiquattro"),
        ("14:30", "quattordici e trenta"),
        ("5,50 €", "cinque euro e cinquanta centesimi"),
        ("20 %", "venti percento"),
        ("2,5 kg", "due virgola cinque chilogrammi"),
        ("+39 06 1234 5678", "più tre nove, zero sei, uno due tre quattro, cinque sei sette otto"),
        ("info@esempio.it", "info chiocciola esempio punto it"),
        ("www.esempio.it/prezzi", "esempio punto it barra prezzi"),
    ],
    "pt": [
        ("1.234,5", "mil duzentos e trinta e quatro vírgula cinco"),
        ("15/03/2024", "quinze de março de dois mil e vinte e quatro"),
        ("14:30", "catorze e trinta"),
        ("5,50 €", "cinco euros e cinquenta cêntimos"),
        ("20 %", "vinte por cento"),
        ("2,5 kg", "dois vírgula cinco quilogramas"),
        ("+351 912-345-678", "mais três cinco um, nove um dois, três quatro cinco, seis sete oito"),
        ("info@exemplo.pt", "info arroba exemplo ponto pt"),
        ("www.exemplo.pt/precos", "exemplo ponto pt barra precos"),
    ],
    "pl": [
        ("1 234,5", "tysiąc dwieście trzydzieści cztery przecinek pięć"),
        ("15.03.2024", "piętnastego marca dwa tysiące dwadzieścia cztery"),
        ("14:30", "czternaście trzydzieści"),
        ("5 zł", "pięć złotych"),
        ("3,50 €", "trzy euro i pięćdziesiąt centów"),
        ("2 %", "dwa procent"),
        ("5 %", "pięć procent"),
        ("2 kg", "dwa kilogramy"),
        ("+48 12-345-67-89", "plus cztery osiem, jeden dwa, trzy cztery pięć, sześć siedem, osiem dziewięć"),
        ("info@przyklad.pl", "info małpa przyklad kropka pl"),
        ("www.przyklad.pl/ceny", "przyklad kropka pl ukośnik ceny"),
    ],
    "nl": [
        ("1.234,5", "duizendtweehonderdvierendertig komma vijf"),
        ("15-03-2024", "vijftien maart tweeduizendvierentwintig"),
        ("14:30", "veertien uur dertig"),
        ("5,50 €", "vijf euro en vijftig cent"),
        ("20 %", "twintig procent"),
        ("2,5 kg", "twee komma vijf kilogram"),
        ("+31 20-123-4567", "plus drie één, twee nul, één twee drie, vier vijf zes zeven"),
        ("info@voorbeeld.nl", "info apenstaartje voorbeeld punt nl"),
        ("www.voorbeeld.nl/prijzen", "voorbeeld punt nl schuine streep prijzen"),
    ],
    "ru": [
        ("1 234,5", "одна тысяча двести тридцать четыре целых пять десятых"),
        ("15.03.2024", "пятнадцатое марта две тысячи двадцать четыре"),
        ("14:30", "четырнадцать тридцать"),
        ("$5", "пять долларов"),
        ("2 %", "два процента"),
        ("5 %", "пять процентов"),
        ("21 °C", "двадцать один градус Цельсия"),
        ("+7 495-123-45-67", "плюс семь, четыре девять пять, один два три, четыре пять, шесть семь"),
        ("info@primer.ru", "info собака primer точка ru"),
        ("www.primer.ru/ceny", "primer точка ru слэш ceny"),
    ],
    "tr": [
        ("1.234,5", "binikiyüzotuzdört virgül beş"),
        ("15.03.2024", "onbeş Mart ikibinyirmidört"),
        ("14:30", "ondört otuz"),
        ("5 ₺", "beş Türk lirası"),
        ("%20", "yüzde yirmi"),
        ("2,5 kg", "iki virgül beş kilogram"),
        ("+90 212-345-6789", "artı dokuz sıfır, iki bir iki, üç dört beş, altı yedi sekiz dokuz"),
        ("info@ornek.tr", "info et ornek nokta tr"),
        ("www.ornek.com.tr/fiyat", "ornek nokta com nokta tr eğik çizgi fiyat"),
    ],
    "cs": [
        ("1 234,5", "tisíc dvěstě třicet čtyři celá pět"),
        ("15.03.2024", "patnáct března dva tisíce dvacet čtyři"),
        ("14:30", "čtrnáct třicet"),
        ("5 €", "pět euro"),
        ("2 %", "dva procenta"),
        ("5 %", "pět procent"),
        ("2 kg", "dva kilogramy"),
        ("+420 123-456-789", "plus čtyři dva nula, jedna dva tři, čtyři pět šest, sedm osm devět"),
        ("info@priklad.cz", "info zavináč priklad tečka cz"),
        ("www.priklad.cz/ceny", "priklad tečka cz lomítko ceny"),
    ],
    "hu": [
        ("1.234,5", "ezerkétszázharmincnégy egész öt tized"),
        ("2024-03-15", "kétezer-huszonnégy március tizenötödik"),
        ("14:30", "tizennégy óra harminc perc"),
        ("5 €", "öt euró"),
        ("20 %", "húsz százalék"),
        ("2,5 kg", "kettő egész öt tized kilogramm"),
        ("+36 1-234-5678", "plusz három hat, egy, kettő három négy, öt hat hét nyolc"),
        ("info@pelda.hu", "info kukac pelda pont hu"),
        ("www.pelda.hu/arak", "pelda pont hu per arak"),
    ],
}
CASES = [(lang, written, said) for lang, pairs in SAID.items() for written, said in pairs]


@pytest.mark.parametrize(("language", "written", "said"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_each_language_says_what_is_written_as_its_speakers_do(language: str, written: str, said: str) -> None:
    assert normalize(written, language).text == said


@pytest.mark.parametrize("language", sorted(SAID))
def test_a_sentence_keeps_its_words_around_what_is_said(language: str) -> None:
    written, said = SAID[language][0]
    assert normalize(f"Alpha {written} omega.", language).text == f"Alpha {said} omega."


def test_markdown_is_read_without_its_markup_and_code_is_left_out() -> None:
    document = """# Release notes

Version **two** is out: see [the guide](https://example.com/guide) and `pip install`.

```python
print("not read")
```

1. First step
2. Second step
"""
    out = normalize(document, "en")
    assert out.text == (
        "Release notes.\nVersion two is out: see the guide and pip install.\none. First step\ntwo. Second step"
    )
    assert out.warnings == ["1 code block(s) left out: code is not read aloud"]


def test_plain_text_is_left_as_written_but_for_its_whitespace() -> None:
    poem = "    Roses are red,\n    violets are blue.\n\n        Indented deeper."  # not code: no fence
    assert normalize(poem, "en").text == "Roses are red, violets are blue.\nIndented deeper."
    text = "A plain sentence, with a comma; and 2*3 stars (not emphasis)."
    assert normalize(text, "en").text == "A plain sentence, with a comma; and two*three stars (not emphasis)."
    assert normalize("Zwei   Leerzeichen\n\nund eine Zeile", "de").text == "Zwei Leerzeichen\nund eine Zeile"


def test_emoji_are_dropped_or_said_in_the_language() -> None:
    assert normalize("Great 👍 work", "en").text == "Great work"
    assert normalize("Great 👍 work", "en", emoji="speak").text == "Great thumbs up work"
    assert normalize("Gut 👍 gemacht", "de", emoji="speak").text == "Gut daumen hoch gemacht"
    dutch = normalize("Goed 👍 gedaan", "nl", emoji="speak")
    assert dutch.text == "Goed gedaan" and dutch.warnings == ["emoji dropped: no emoji names in language 'nl'"]


def test_initialisms_are_spelled_and_acronyms_read() -> None:
    assert normalize("The FBI, HTML and NASA.", "en").text == "The F B I, H T M L and NASA."


def test_ranges_and_local_phone_numbers() -> None:
    assert normalize("From 1990-2000.", "en").text == "From one thousand, nine hundred and ninety – two thousand."
    assert normalize("Call 555-123-4567.", "en").text == "Call five five five, one two three, four five six seven."
    assert normalize("Call (030) 1234567.", "de").text == "Call null drei null, eins zwei drei vier fünf sechs sieben."


def test_languages_without_a_table_get_markdown_and_emoji_rules_only() -> None:
    assert normalize("**数字** 123 👍", "zh-cn").text == "数字 123"


# Runs that once made a rule rescan the rest of the text from each of their characters (quadratic: 50 000 digits
# took 70 s in the money rule, 50 000 characters of "1-" as long in the URL rule).
HOSTILE_RUNS = ("9", "1-", "1.", "a@", "www.", "a.", "1st", "+1 ", "$1", "%1", "1:", "(1", "1,")


@pytest.mark.parametrize("unit", HOSTILE_RUNS)
def test_long_runs_of_digits_and_signs_take_time_in_proportion_to_their_length(unit: str) -> None:
    """Four times the text may take about four times as long (at most eight: the machine is noisy), not sixteen."""

    def seconds(size: int) -> float:
        text = unit * (size // len(unit))
        started = time.perf_counter()
        normalize(text, "en")
        normalize(text, "de")
        return time.perf_counter() - started

    seconds(500)  # warm the caches (CLDR data, num2words' converters)
    # The best of three each: one measurement of a few hundred milliseconds failed once here on a noisy machine.
    short, long = min(seconds(2_000) for _ in range(3)), min(seconds(8_000) for _ in range(3))
    assert long < 8 * short + 0.05, f"{unit!r}: {short:.3f} s for 2 000 characters, {long:.3f} s for 8 000"


LANGUAGES = (*SAID, "zh-cn", "ja", "ar", "hi", "ko")
WRITTEN = "0123456789 .,-+:/%$€£@()[]*#`_°CkgmhsstndrdTHaeiou\n👍"


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet=WRITTEN, max_size=60) | st.text(max_size=60), language=st.sampled_from(LANGUAGES))
def test_any_text_in_any_language_normalizes_without_an_error(text: str, language: str) -> None:
    """Whatever a request holds, normalisation answers: numbers num2words cannot read are read digit by digit."""
    out = normalize(text, language, emoji="speak")
    assert isinstance(out.text, str) and all(isinstance(w, str) for w in out.warnings)


# --- over HTTP ------------------------------------------------------------------------------------------------------
PLAIN = {"speed": None, "pause_ms": 0}  # a segment at the request's speed, not a pause (tests/test_ssml.py has those)


def test_the_normalize_endpoint_answers_the_segments_that_would_be_spoken(client) -> None:
    answer = client.post(
        "/v1/text/normalize",
        json={"input": "It costs $5.50.\n\n```\ncode\n```", "language": "en", "voice": "alloy"},
    )
    assert answer.status_code == 200, answer.json
    assert answer.json == {
        "segments": [{"text": "It costs five dollars and fifty cents.", "language": "en", "voice": "alloy"} | PLAIN],
        "warnings": ["1 code block(s) left out: code is not read aloud"],
        "lexicons": [],
    }
    off = client.post("/v1/text/normalize", json={"input": "It costs $5.50.", "language": "en", "normalize": "off"})
    assert off.json == {
        "segments": [{"text": "It costs $5.50.", "language": "en", "voice": None} | PLAIN],
        "warnings": [],
        "lexicons": [],
    }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"input": "Hello.", "language": "xx"}, 400, "unknown_language"),
        ({"input": "```\nonly code\n```", "language": "en"}, 400, "nothing_to_speak"),
        ({"input": "   ", "language": "en"}, 400, "validation_error"),
        ({"input": "Hello.", "language": "en", "input_format": "html"}, 400, "validation_error"),
        ({"input": "Hello.", "language": "en", "normalize": "maybe"}, 400, "validation_error"),
        ({"input": "x" * 100_001, "language": "en"}, 413, "text_too_long"),
    ],
)
def test_the_normalize_endpoint_refuses_with_the_error_contract(client, body: dict, status: int, code: str) -> None:
    answer = client.post("/v1/text/normalize", json=body)
    assert answer.status_code == status, answer.json
    assert answer.json["error"]["code"] == code and answer.json["error"]["message"]


def test_the_workers_say_the_normalized_segments(farm: Farm) -> None:
    """The dev model says a segment of N characters in round(1.5 N) tokens when no length is asked for: the audio
    and the job's segments show that the workers were given what /v1/text/normalize answers, or the text as written
    with normalize off."""
    from workers.engine import DEV_TOKENS_PER_CHAR

    text = "Pay $5.50 at 9:05 pm."
    expected = {"auto": ["Pay five dollars and fifty cents at nine oh five p m."], "off": [text]}
    for mode, said in expected.items():
        shown = requests.post(
            farm.url("/v1/text/normalize"), json={"input": text, "language": "en", "normalize": mode}, timeout=30
        )
        assert [s["text"] for s in shown.json()["segments"]] == said
        body = {"text": text, "language": "en", "speaker_id": DEV_SPEAKER, "normalize": mode}
        made = requests.post(farm.url("/tts"), json=body, timeout=120)
        assert made.status_code == 200, made.text
        job = farm.job(made.headers["X-Session-Id"])
        assert [s["characters"] for s in job["segments"]] == [len(s) for s in said]
        tokens = [max(8, round(len(s) * DEV_TOKENS_PER_CHAR)) for s in said]
        assert read_wav(made.content)[1] == sum(xtts_samples(n) for n in tokens), mode
