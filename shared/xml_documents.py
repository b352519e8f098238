"""XML documents users send (SSML, W3C pronunciation lexicons), read safely: expat through defusedxml, DTDs forbidden
(so no entity is ever declared: none is expanded, as in a billion laughs, or fetched, as an external one), nesting
deeper than MAX_DEPTH refused as it is read, and each element's line kept, so that every refusal names its line."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET

from shared.errors import InvalidInput

MAX_DEPTH = 32


class _LineRecorder(ET.TreeBuilder):
    """ElementTree's builder that notes each element's line and refuses nesting deeper than MAX_DEPTH at once."""

    def __init__(self, what: str, error: type[InvalidInput]) -> None:
        super().__init__()
        self.what, self.error = what, error
        self.expat: Any = None
        self.lines: dict[int, int] = {}
        self._depth = 0

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self._depth += 1
        line = self.expat.CurrentLineNumber if self.expat is not None else 0
        if self._depth > MAX_DEPTH:
            raise self.error(f"{self.what} line {line}: tags nested deeper than {MAX_DEPTH}", details={"line": line})
        element = super().start(tag, attrs)
        self.lines[id(element)] = line
        return element

    def end(self, tag: str) -> ET.Element:
        self._depth -= 1
        return super().end(tag)


def parse_xml(document: str, what: str, error: type[InvalidInput]) -> tuple[ET.Element, dict[int, int]]:
    """The document's root element and each element's line (by id); `error` (naming `what` and the line) when it
    is not well-formed, declares a DTD or entities, or nests too deep."""
    builder = _LineRecorder(what, error)
    parser = SafeET.DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    builder.expat = parser.parser
    try:
        parser.feed(document)
        root = parser.close()
    except ET.ParseError as exc:
        line, column = exc.position
        reason = str(exc).split(":", maxsplit=1)[0]
        raise error(
            f"{what} line {line}, column {column + 1}: {reason} (the document is not well-formed XML)",
            details={"line": line, "column": column + 1},
        ) from None
    except defusedxml.DefusedXmlException:
        line = parser.parser.CurrentLineNumber
        raise error(
            f"{what} line {line}: a DTD or entity declaration; {what} here may use none (entities are never expanded "
            "or fetched)",
            details={"line": line},
        ) from None
    return root, builder.lines


def local_name(tag: str) -> str:
    """A tag without its namespace: `<speak xmlns="http://www.w3.org/2001/10/synthesis">` is `speak`."""
    return tag.rsplit("}", maxsplit=1)[-1]


def line_of(lines: dict[int, int], element: ET.Element) -> int:
    return lines.get(id(element), 0)
