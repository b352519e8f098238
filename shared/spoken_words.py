"""The words normalisation says for what is written in symbols, per language (shared/normalization.py).

Numbers, ordinals, years and currency forms come from num2words, month names, unit names and their plural forms
from CLDR (babel); what neither covers is here: the words for the signs inside addresses, how a date and a time of
day are said, and the ordinal suffixes written after digits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Words:
    """One language's words. `date` and `time` are str.format patterns: {day}, {month}, {year}; {hour}, {minute}
    ({minute} is left out, with what stands before it in brackets, at the full hour: `{hour} Uhr[ {minute}]`).
    `day_ordinal`: the day of the month is said as an ordinal (num2words' form), else as a cardinal;
    `first_day`: the word for the first of the month where it is not the cardinal (French's "premier")."""

    dot: str
    at: str
    slash: str
    dash: str
    underscore: str
    plus: str
    and_: str
    minus: str
    point: str  # the decimal mark
    date: str
    time: str
    day_ordinal: bool = False
    first_day: str | None = None
    ordinal_suffixes: tuple[str, ...] = ()
    minute_zero: str | None = None  # English says "nine oh five"
    own_decimals: bool = False  # decimals said with `point` here, where num2words' reading is wrong
    day_endings: tuple[tuple[str, str], ...] = ()  # the day's ordinal in the case a date takes (its words' endings)
    full_hour: str | None = None  # English says "nine o'clock"


WORDS: dict[str, Words] = {
    "en": Words(
        "dot",
        "at",
        "slash",
        "dash",
        "underscore",
        "plus",
        "and",
        "minus",
        "point",
        date="{month} {day}, {year}",
        time="{hour}[ {minute}]",
        day_ordinal=True,
        ordinal_suffixes=("st", "nd", "rd", "th"),
        minute_zero="oh",
        full_hour="{hour} o'clock",
    ),
    "de": Words(
        "Punkt",
        "at",
        "Schrägstrich",
        "Bindestrich",
        "Unterstrich",
        "plus",
        "und",
        "minus",
        "Komma",
        date="{day} {month} {year}",
        time="{hour} Uhr[ {minute}]",
        day_ordinal=True,
    ),
    "fr": Words(
        "point",
        "arobase",
        "barre oblique",
        "tiret",
        "tiret bas",
        "plus",
        "et",
        "moins",
        "virgule",
        date="{day} {month} {year}",
        time="{hour} heures[ {minute}]",
        first_day="premier",
        ordinal_suffixes=("er", "re", "e", "ème"),
    ),
    "es": Words(
        "punto",
        "arroba",
        "barra",
        "guion",
        "guion bajo",
        "más",
        "y",
        "menos",
        "coma",
        date="{day} de {month} de {year}",
        time="{hour}[ y {minute}]",
        first_day="primero",
        own_decimals=True,
        ordinal_suffixes=("º", "ª", "o", "a"),
    ),
    "it": Words(
        "punto",
        "chiocciola",
        "barra",
        "trattino",
        "trattino basso",
        "più",
        "e",
        "meno",
        "virgola",
        date="{day} {month} {year}",
        time="{hour}[ e {minute}]",
        first_day="primo",
        own_decimals=True,
        ordinal_suffixes=("º", "ª", "o", "a"),
    ),
    "pt": Words(
        "ponto",
        "arroba",
        "barra",
        "hífen",
        "sublinhado",
        "mais",
        "e",
        "menos",
        "vírgula",
        date="{day} de {month} de {year}",
        time="{hour}[ e {minute}]",
        first_day="primeiro",
        ordinal_suffixes=("º", "ª", "o", "a"),
    ),
    "pl": Words(
        "kropka",
        "małpa",
        "ukośnik",
        "myślnik",
        "podkreślnik",
        "plus",
        "i",
        "minus",
        "przecinek",
        date="{day} {month} {year}",
        time="{hour}[ {minute}]",
        day_ordinal=True,
        day_endings=(("y", "ego"), ("i", "iego")),  # genitive: "piętnastego marca"
    ),
    "nl": Words(
        "punt",
        "apenstaartje",
        "schuine streep",
        "streepje",
        "laag streepje",
        "plus",
        "en",
        "min",
        "komma",
        date="{day} {month} {year}",
        time="{hour} uur[ {minute}]",
        ordinal_suffixes=("ste", "de", "e"),
    ),
    "ru": Words(
        "точка",
        "собака",
        "слэш",
        "дефис",
        "нижнее подчёркивание",
        "плюс",
        "и",
        "минус",
        "запятая",
        date="{day} {month} {year}",
        time="{hour}[ {minute}]",
        day_ordinal=True,
        day_endings=(("ый", "ое"), ("ой", "ое"), ("ий", "ье")),  # neuter: "пятнадцатое марта"
    ),
    "tr": Words(
        "nokta",
        "et",
        "eğik çizgi",
        "tire",
        "alt çizgi",
        "artı",
        "ve",
        "eksi",
        "virgül",
        date="{day} {month} {year}",
        time="{hour}[ {minute}]",
        own_decimals=True,
    ),
    "cs": Words(
        "tečka",
        "zavináč",
        "lomítko",
        "pomlčka",
        "podtržítko",
        "plus",
        "a",
        "mínus",
        "čárka",
        date="{day} {month} {year}",
        time="{hour}[ {minute}]",
    ),
    "hu": Words(
        "pont",
        "kukac",
        "per",
        "kötőjel",
        "alsóvonás",
        "plusz",
        "és",
        "mínusz",
        "vessző",
        date="{year} {month} {day}",
        time="{hour} óra[ {minute} perc]",
        day_ordinal=True,
    ),
}

# How each language writes a date in digits besides ISO 8601 (day, month and year in that order, and the separator).
NUMERIC_DATE_ORDER: dict[str, str] = {
    "en": "mdy",
    "de": "dmy",
    "fr": "dmy",
    "es": "dmy",
    "it": "dmy",
    "pt": "dmy",
    "pl": "dmy",
    "nl": "dmy",
    "ru": "dmy",
    "tr": "dmy",
    "cs": "dmy",
    "hu": "ymd",
}

# Units written after a number, and their CLDR names (babel.units): CLDR says them with the right plural form.
UNITS: dict[str, str] = {
    "km/h": "speed-kilometer-per-hour",
    "mph": "speed-mile-per-hour",
    "°C": "temperature-celsius",
    "°F": "temperature-fahrenheit",
    "%": "concentr-percent",
    "km": "length-kilometer",
    "cm": "length-centimeter",
    "mm": "length-millimeter",
    "m": "length-meter",
    "kg": "mass-kilogram",
    "mg": "mass-milligram",
    "g": "mass-gram",
    "ml": "volume-milliliter",
    "l": "volume-liter",
    "kWh": "energy-kilowatt-hour",
    "GB": "digital-gigabyte",
    "MB": "digital-megabyte",
}

# Currency signs written before or after an amount, and their ISO 4217 codes.
CURRENCY_SIGNS: dict[str, str] = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₽": "RUB", "₺": "TRY", "zł": "PLN"}
CURRENCY_CODES = frozenset({"USD", "EUR", "GBP", "JPY", "CHF", "RUB", "TRY", "PLN", "CZK", "HUF"})

# Symbols said as a word where they stand alone between words.
SYMBOLS = ("&", "+", "=", "@")
