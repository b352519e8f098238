"""Documents people turn into audiobooks (EPUB, Markdown, HTML, plain text), read into chapters of paragraphs."""

from shared.documents.model import Chapter, Cover, Document
from shared.documents.read import DocumentKind, read_document

__all__ = ["Chapter", "Cover", "Document", "DocumentKind", "read_document"]
