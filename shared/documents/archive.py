"""An EPUB's ZIP archive, checked before anything reads it: bounded in entries and unpacked size (the sizes its
directory declares, which zipfile then holds each entry to: it stops at the declared size and checks the CRC), no
entry that packs too well (a zip bomb), no path that leaves the archive, no encrypted content (DRM), and no XML
entity declaration in any of its XML documents (expat through defusedxml: nothing is expanded or fetched)."""

from __future__ import annotations

import io
import posixpath
import zipfile

import defusedxml
import defusedxml.ElementTree as SafeET

from shared.documents.model import MAX_ENTRIES, MAX_ENTRY_RATIO, MAX_UNPACKED_BYTES
from shared.errors import DocumentTooLarge, DrmProtected, InvalidDocument

XML_SUFFIXES = (".xml", ".opf", ".ncx", ".xhtml", ".html", ".htm", ".svg", ".smil")
CONTENT = (".xhtml", ".html", ".htm")
# Encryption that is not DRM: fonts obfuscated so that they are not lifted from the book (IDPF and Adobe).
FONT_OBFUSCATION = frozenset({"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"})
ENCRYPTION_NS = "{http://www.w3.org/2001/04/xmlenc#}"
# Rights files of DRM schemes (Adobe ADEPT, Apple FairPlay, Barnes & Noble, Kobo): their presence means DRM.
RIGHTS_FILES = frozenset({"meta-inf/rights.xml", "meta-inf/sinf.xml", "meta-inf/license.lcpl"})


def checked_archive(data: bytes) -> zipfile.ZipFile:
    """The EPUB's archive, once every check above has passed."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise InvalidDocument(f"not an EPUB: the ZIP archive cannot be read ({exc})") from exc
    if len(entries) > MAX_ENTRIES:
        raise DocumentTooLarge(f"the EPUB holds {len(entries)} files; at most {MAX_ENTRIES} are read")
    unpacked = sum(e.file_size for e in entries)
    if unpacked > MAX_UNPACKED_BYTES:
        raise DocumentTooLarge(f"the EPUB unpacks to {unpacked} bytes; at most {MAX_UNPACKED_BYTES} are read")
    for entry in entries:
        _check_entry(entry)
    _check_drm(archive)
    for entry in entries:
        if entry.filename.lower().endswith(XML_SUFFIXES):
            # Content documents may be sloppy markup, which lxml's HTML parser reads anyway (and it expands no
            # declared entity); the package's own files must be XML.
            check_xml(_read(archive, entry), entry.filename, strict=not entry.filename.lower().endswith(CONTENT))
    return archive


def _check_entry(entry: zipfile.ZipInfo) -> None:
    name = entry.filename
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise InvalidDocument(f"the EPUB holds a path that leaves the archive: {name[:200]!r}")
    if posixpath.normpath(name.replace("\\", "/")).startswith("../"):
        raise InvalidDocument(f"the EPUB holds a path that leaves the archive: {name[:200]!r}")
    if entry.flag_bits & 0x1:
        raise DrmProtected(f"the EPUB's file {name[:200]!r} is encrypted")
    if entry.file_size > max(entry.compress_size, 1) * MAX_ENTRY_RATIO and entry.file_size > 1024 * 1024:
        raise InvalidDocument(
            f"the EPUB's file {name[:200]!r} unpacks {entry.file_size // max(entry.compress_size, 1)} times its "
            f"packed size (a zip bomb); at most {MAX_ENTRY_RATIO} times is read"
        )


def _check_drm(archive: zipfile.ZipFile) -> None:
    names = {n.lower(): n for n in archive.namelist()}
    if rights := sorted(set(names) & RIGHTS_FILES):
        raise DrmProtected(f"the EPUB is DRM-protected ({names[rights[0]]}): the farm cannot read it")
    if "meta-inf/encryption.xml" not in names:
        return
    root = check_xml(_read(archive, archive.getinfo(names["meta-inf/encryption.xml"])), "META-INF/encryption.xml")
    assert root is not None  # strict
    methods = {m.get("Algorithm", "") for m in root.iter(f"{ENCRYPTION_NS}EncryptionMethod")}
    if methods - FONT_OBFUSCATION:
        raise DrmProtected("the EPUB's content is encrypted (DRM, META-INF/encryption.xml): the farm cannot read it")


def _read(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(entry)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError) as exc:
        raise InvalidDocument(f"the EPUB's file {entry.filename[:200]!r} cannot be read: {exc}") from exc


def check_xml(data: bytes, name: str, strict: bool = True) -> SafeET.Element | None:
    """The XML document `data`, parsed by expat with every entity declaration and external reference refused (a
    DOCTYPE alone, as XHTML files carry, is allowed); None for a document that is not well-formed, unless `strict`."""
    try:
        return SafeET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise InvalidDocument(f"{name[:200]} declares an XML entity ({type(exc).__name__}): refused") from exc
    except SafeET.ParseError as exc:
        if strict:
            raise InvalidDocument(f"{name[:200]} is not well-formed XML: {exc}") from exc
        return None
