"""An EPUB's ZIP archive, checked and copied before EbookLib sees it.

What is checked, before anything is unpacked: the entries and the sizes the archive's directory declares, the
compression (stored or deflated only, as the EPUB standard allows), no entry that packs too well (a zip bomb) and no
path that leaves the archive. Then each entry that will be read is read a little at a time and never past its
declared size or its budget (zipfile alone would inflate a whole entry, whatever its directory says, before it
compares sizes); DRM is refused (encrypted entries, rights files, encryption other than font obfuscation); the
package (container.xml, the OPF file) is read, its manifest checked (no two items for one file); and every XML file
that will be parsed (the package, the table of contents, the content documents) is scanned by expat for entity
declarations and external references, refused before any parser could expand or fetch them.

EbookLib then reads a copy of the archive with only what it needs: the package, the text, and the cover; every
other file (images, fonts, media) is there but empty. So its own reads are of checked, bounded bytes."""

from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass
from urllib.parse import unquote
from xml.parsers import expat

from lxml import etree

from shared.documents.model import (
    MAX_COVER_BYTES,
    MAX_ENTRIES,
    MAX_ENTRY_RATIO,
    MAX_PACKAGE_BYTES,
    MAX_TEXT_FILE_BYTES,
    MAX_TEXT_FILES_BYTES,
    MAX_UNPACKED_BYTES,
)
from shared.errors import DocumentTooLarge, DrmProtected, InvalidDocument

OPF_NS = "{http://www.idpf.org/2007/opf}"
CONTAINER_NS = "{urn:oasis:names:tc:opendocument:xmlns:container}"
ENCRYPTION_NS = "{http://www.w3.org/2001/04/xmlenc#}"
# Encryption that is not DRM: fonts obfuscated so that they are not lifted from the book (IDPF and Adobe).
FONT_OBFUSCATION = frozenset({"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"})
FONT_SUFFIXES = (".otf", ".ttf", ".woff", ".woff2", ".eot")
# Rights files of DRM schemes (Adobe ADEPT, Apple FairPlay, Readium LCP): their presence means DRM.
RIGHTS_FILES = frozenset({"meta-inf/rights.xml", "meta-inf/sinf.xml", "meta-inf/license.lcpl"})
# Manifest media types of what EbookLib parses as XML or HTML.
PARSED_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/x-dtbncx+xml", "application/xml"})
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Package:
    """What the checks learned of the book: the copy EbookLib reads, and the package's own facts."""

    copy: bytes
    base: str  # the package file's folder: EbookLib names items relative to it
    spine: tuple[tuple[str, bool], ...]  # (path in the archive, linear), in reading order, each document once
    cover_href: str | None  # relative to `base`


def checked_package(data: bytes) -> Package:
    archive, entries = _directory(data)
    names = {e.filename: e for e in entries}
    _check_drm(archive, names)
    if "META-INF/container.xml" not in names:
        raise InvalidDocument("not an EPUB: it has no META-INF/container.xml")
    kept: dict[str, bytes] = {"META-INF/container.xml": _read(archive, names["META-INF/container.xml"], CHUNK * 4)}
    opf_path = _package_path(kept["META-INF/container.xml"], names)
    kept[opf_path] = _read(archive, names[opf_path], MAX_PACKAGE_BYTES)
    opf = _xml_tree(kept[opf_path], opf_path)
    base = posixpath.dirname(opf_path)
    manifest = _manifest(opf, base, names)
    cover = _cover_href(opf, manifest)
    budget = MAX_TEXT_FILES_BYTES
    if "mimetype" in names:
        kept["mimetype"] = _read(archive, names["mimetype"], 256)
    for path, media_type in manifest.values():
        if path not in names or path in kept:
            continue
        if media_type in PARSED_TYPES:
            content = _read(archive, names[path], min(MAX_TEXT_FILE_BYTES, budget))
            budget -= len(content)
            no_entities(content, path)
            kept[path] = content
        elif path == cover and names[path].file_size <= MAX_COVER_BYTES:
            kept[path] = _read(archive, names[path], MAX_COVER_BYTES)
    spine = _spine(opf, manifest)
    cover_href = None if cover is None else posixpath.relpath(cover, base or ".")
    return Package(_copy(names, kept), base, spine, cover_href)


def _directory(data: bytes) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except Exception as exc:  # zipfile raises what its reads raise: BadZipFile, ValueError, OverflowError, ...
        raise InvalidDocument(f"not an EPUB: the ZIP archive cannot be read ({exc})") from exc
    if len(entries) > MAX_ENTRIES:
        raise DocumentTooLarge(f"the EPUB holds {len(entries)} files; at most {MAX_ENTRIES} are read")
    unpacked = sum(e.file_size for e in entries)
    if unpacked > MAX_UNPACKED_BYTES:
        raise DocumentTooLarge(f"the EPUB unpacks to {unpacked} bytes; at most {MAX_UNPACKED_BYTES} are read")
    for entry in entries:
        _check_entry(entry)
    return archive, entries


def _check_entry(entry: zipfile.ZipInfo) -> None:
    name = entry.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise InvalidDocument(f"the EPUB holds a path that leaves the archive: {name[:200]!r}")
    if entry.flag_bits & 0x1:
        raise DrmProtected(f"the EPUB's file {name[:200]!r} is encrypted")
    if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InvalidDocument(f"the EPUB's file {name[:200]!r} uses compression method {entry.compress_type}; EPUB "
                              "allows only stored and deflated files")  # fmt: skip
    if entry.file_size > max(entry.compress_size, 1) * MAX_ENTRY_RATIO and entry.file_size > 64 * 1024:
        raise InvalidDocument(
            f"the EPUB's file {name[:200]!r} unpacks {entry.file_size // max(entry.compress_size, 1)} times its "
            f"packed size (a zip bomb); at most {MAX_ENTRY_RATIO} times is read"
        )


def _read(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, budget: int) -> bytes:
    """The entry's bytes, read a chunk at a time: never more than it declares, nor than `budget`."""
    if entry.file_size > budget:
        raise DocumentTooLarge(f"the EPUB's file {entry.filename[:200]!r} has {entry.file_size} bytes; at most "
                               f"{budget} are read")  # fmt: skip
    out = bytearray()
    try:
        with archive.open(entry) as stream:
            while piece := stream.read(CHUNK):
                out += piece
                if len(out) > entry.file_size:
                    raise InvalidDocument(f"the EPUB's file {entry.filename[:200]!r} is longer than it declares")
    except InvalidDocument:
        raise
    except Exception as exc:  # a broken stream: zlib.error, BadZipFile (CRC), EOFError, OSError, ...
        raise InvalidDocument(f"the EPUB's file {entry.filename[:200]!r} cannot be read: {exc}") from exc
    return bytes(out)


def _check_drm(archive: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo]) -> None:
    lower = {n.lower(): n for n in names}
    if rights := sorted(set(lower) & RIGHTS_FILES):
        raise DrmProtected(f"the EPUB is DRM-protected ({lower[rights[0]]}): the farm cannot read it")
    if "meta-inf/encryption.xml" not in lower:
        return
    data = _read(archive, names[lower["meta-inf/encryption.xml"]], MAX_PACKAGE_BYTES)
    root = _xml_tree(data, "META-INF/encryption.xml")
    for encrypted in root.iter(f"{ENCRYPTION_NS}EncryptedData"):
        method = encrypted.find(f"{ENCRYPTION_NS}EncryptionMethod")
        target = encrypted.find(f"{ENCRYPTION_NS}CipherData/{ENCRYPTION_NS}CipherReference")
        algorithm = "" if method is None else method.get("Algorithm", "")
        uri = "" if target is None else unquote(target.get("URI", ""))
        if algorithm not in FONT_OBFUSCATION or not uri.lower().endswith(FONT_SUFFIXES):
            raise DrmProtected(f"the EPUB's content is encrypted ({uri[:200] or 'encryption.xml'}): DRM, which the "
                               "farm cannot read")  # fmt: skip


def _package_path(container_xml: bytes, names: dict[str, zipfile.ZipInfo]) -> str:
    """Where container.xml says the package file is (it must be in the archive)."""
    container = _xml_tree(container_xml, "META-INF/container.xml")
    rootfile = container.find(f"{CONTAINER_NS}rootfiles/{CONTAINER_NS}rootfile")
    path = "" if rootfile is None else rootfile.get("full-path", "")
    if path not in names:
        raise InvalidDocument(f"the EPUB's package file {path[:200]!r} is not in the archive")
    return path


def _manifest(opf: etree._Element, base: str, names: dict[str, zipfile.ZipInfo]) -> dict[str, tuple[str, str]]:
    """id -> (path in the archive, media type); two items for one file are refused (each would be read again)."""
    items: dict[str, tuple[str, str]] = {}
    paths: set[str] = set()
    for item in opf.iter(f"{OPF_NS}item"):
        path = posixpath.normpath(posixpath.join(base, unquote(item.get("href", ""))))
        if path in paths:
            raise InvalidDocument(f"the EPUB's manifest names {path[:200]!r} twice")
        paths.add(path)
        items[item.get("id", "")] = (path, item.get("media-type", ""))
        if len(items) > len(names):
            raise InvalidDocument("the EPUB's manifest names more items than the archive holds")
    return items


def _cover_href(opf: etree._Element, manifest: dict[str, tuple[str, str]]) -> str | None:
    for item in opf.iter(f"{OPF_NS}item"):
        if "cover-image" in (item.get("properties") or "").split() and item.get("id") in manifest:
            return manifest[item.get("id", "")][0]
    for meta in opf.iter(f"{OPF_NS}meta"):
        if meta.get("name") == "cover" and meta.get("content") in manifest:
            return manifest[meta.get("content", "")][0]
    return None


def _spine(opf: etree._Element, manifest: dict[str, tuple[str, str]]) -> tuple[tuple[str, bool], ...]:
    """The spine's documents in order, each once (a spine may name one many times: it is read once)."""
    seen: set[str] = set()
    spine = []
    for itemref in opf.iter(f"{OPF_NS}itemref"):
        idref = itemref.get("idref", "")
        if idref in manifest and idref not in seen:
            seen.add(idref)
            spine.append((manifest[idref][0], itemref.get("linear", "yes") != "no"))
    return tuple(spine)


def _copy(names: dict[str, zipfile.ZipInfo], kept: dict[str, bytes]) -> bytes:
    """The archive again, its entries in order: those kept with their bytes, the others empty."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
        for name in names:
            copy.writestr(name, kept.get(name, b""))
    return out.getvalue()


def no_entities(data: bytes, name: str) -> None:
    """Refuse an XML document that declares an entity or refers to an external one, read by expat without
    building anything (a document that is not well-formed is left to the HTML parser, which expands no declared
    entity)."""

    def refuse(*_: object) -> None:
        raise InvalidDocument(f"{name[:200]} declares an XML entity: refused")

    parser = expat.ParserCreate()
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(data, True)
    except expat.ExpatError:
        return


def _xml_tree(data: bytes, name: str) -> etree._Element:
    """A small XML file of the package as a tree: scanned for entities first, then read by lxml without resolving
    any, fetching anything, or giving up at the first error (as EbookLib reads it)."""
    no_entities(data, name)
    parser = etree.XMLParser(recover=True, resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise InvalidDocument(f"{name[:200]} cannot be read: {exc}") from exc
    if root is None:
        raise InvalidDocument(f"{name[:200]} is not XML")
    return root
