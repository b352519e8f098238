"""The web page at /ui: plain HTML, JavaScript and CSS from api/webpage/, no build step and nothing fetched from
elsewhere. It is public (it holds no data; the API calls it makes need a key where keys are on, and the page asks
for one) and not part of the OpenAPI document, which describes the API, not its files.

Only the files named in ASSETS are served, with their content types set here: a request can name nothing else, so
no path can leave the folder, and no content type depends on the machine's mime.types.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, redirect

from shared.errors import NotFound

FOLDER = Path(__file__).resolve().parent.parent / "webpage"
PAGE = "index.html"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    # The page names its icon: without one, every load asks for /favicon.ico and logs its 404 in the console.
    "favicon.svg": "image/svg+xml",
}
# The page runs its own script and style only, talks to this farm only, and plays audio it made itself (blob:).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; media-src 'self' blob:; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

bp = Blueprint("webpage", __name__)


def _file(name: str, content_type: str) -> Response:
    response = Response((FOLDER / name).read_bytes(), content_type=content_type)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"  # revalidate, so an upgraded farm serves its new page at once
    return response


@bp.get("/ui")
def page() -> Response:
    return _file(PAGE, "text/html; charset=utf-8")


@bp.get("/ui/")
def page_with_slash() -> Response:
    # The page links its files relative to /ui; under /ui/ they would resolve one folder too deep.
    return redirect("../ui", 308)  # type: ignore[return-value]


@bp.get("/ui/<path:name>")
def asset(name: str) -> Response:
    content_type = ASSETS.get(name)
    if content_type is None:
        raise NotFound(f"the web page has no file {name[:100]!r}", details={"files": sorted(ASSETS)})
    return _file(name, content_type)
