"""W3C Pronunciation Lexicon Specification (PLS 1.0) files in and out of a lexicon.

XTTS reads text, so the farm takes a lexeme's `<alias>` (a respelling), never its `<phoneme>`: a lexeme with
phonemes only is refused, naming its graphemes and line, rather than silently ignored. Each `<grapheme>` of a lexeme
becomes an entry with the lexeme's first alias. PLS has no case or word-boundary rules: the farm writes an entry's in
attributes of its own namespace (which other readers ignore) and reads them back; without them an entry matches whole
words, ignoring case (the farm's defaults).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from shared.errors import InvalidInput
from shared.lexicons import MAX_ALIAS_CHARS, MAX_ENTRIES, MAX_GRAPHEME_CHARS, Entry
from shared.xml_documents import line_of, local_name, parse_xml

PLS_NAMESPACE = "http://www.w3.org/2005/01/pronunciation-lexicon"
FARM_NAMESPACE = "urn:xtts-farm:lexicon"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


class InvalidLexicon(InvalidInput):
    code = "invalid_lexicon"


def read_pls(document: str) -> tuple[str | None, list[Entry]]:
    """(the lexicon's xml:lang as given, its entries), or InvalidLexicon naming the line."""
    root, lines = parse_xml(document, "PLS", InvalidLexicon)
    if local_name(root.tag) != "lexicon":
        raise InvalidLexicon(
            f"PLS line {line_of(lines, root)}: the root element is <{local_name(root.tag)}>, not <lexicon>",
            details={"line": line_of(lines, root)},
        )
    entries: list[Entry] = []
    phonemes_only: list[str] = []
    for lexeme in root:
        if local_name(lexeme.tag) != "lexeme":
            continue  # <meta>, <metadata>: nothing to say
        graphemes = [_text(child) for child in lexeme if local_name(child.tag) == "grapheme"]
        aliases = [_text(child) for child in lexeme if local_name(child.tag) == "alias"]
        line = line_of(lines, lexeme)
        if not graphemes or not all(graphemes):
            raise InvalidLexicon(f"PLS line {line}: a <lexeme> needs a non-empty <grapheme>", details={"line": line})
        if not aliases or not aliases[0]:
            phonemes_only.append(f"{graphemes[0]!r} (line {line})")
            continue
        case_sensitive = lexeme.get(f"{{{FARM_NAMESPACE}}}case-sensitive") == "true"
        whole_word = lexeme.get(f"{{{FARM_NAMESPACE}}}whole-word") != "false"
        entries += [_entry(Entry(grapheme, aliases[0], case_sensitive, whole_word), line) for grapheme in graphemes]
    if phonemes_only:
        raise InvalidLexicon(
            "PLS lexemes with phonemes and no alias cannot be used: XTTS reads text, not phonemes; give each an "
            f"<alias> that respells it: {', '.join(phonemes_only[:20])}",
            details={"phoneme_only": len(phonemes_only)},
        )
    if len(entries) > MAX_ENTRIES:
        raise InvalidLexicon(f"the lexicon has {len(entries)} entries; at most {MAX_ENTRIES} are taken")
    return root.get(_XML_LANG), entries


def write_pls(language: str | None, entries: list[Entry]) -> str:
    """A PLS 1.0 document of the entries (alias lexemes)."""
    ET.register_namespace("", PLS_NAMESPACE)
    ET.register_namespace("farm", FARM_NAMESPACE)
    root = ET.Element(
        f"{{{PLS_NAMESPACE}}}lexicon",
        {"version": "1.0", "alphabet": "x-alias", _XML_LANG: language or "und"},
    )
    for entry in entries:
        lexeme = ET.SubElement(root, f"{{{PLS_NAMESPACE}}}lexeme")
        if entry.case_sensitive:
            lexeme.set(f"{{{FARM_NAMESPACE}}}case-sensitive", "true")
        if not entry.whole_word:
            lexeme.set(f"{{{FARM_NAMESPACE}}}whole-word", "false")
        ET.SubElement(lexeme, f"{{{PLS_NAMESPACE}}}grapheme").text = entry.grapheme
        ET.SubElement(lexeme, f"{{{PLS_NAMESPACE}}}alias").text = entry.alias
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def _entry(entry: Entry, line: int) -> Entry:
    if len(entry.grapheme) > MAX_GRAPHEME_CHARS or len(entry.alias) > MAX_ALIAS_CHARS:
        raise InvalidLexicon(
            f"PLS line {line}: a grapheme is at most {MAX_GRAPHEME_CHARS} characters and an alias {MAX_ALIAS_CHARS}",
            details={"line": line},
        )
    return entry
