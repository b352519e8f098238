"""The API's OpenAPI document: flask-openapi3's, completed so that it says exactly what the endpoints send.

- One error contract: every 4xx/5xx is an `ErrorResponse` object (flask-openapi3 declares its validation response
  as an *array* of the validation model, on every operation, even those that take no input).
- Authentication: the bearer scheme `apiKey` (`Authorization: Bearer <key>`, the header the `openai` client sends),
  optional in the document because a farm may run without keys (API_KEYS_REQUIRED): where keys are needed, 401;
  operator endpoints, 403 without an admin key. /health and the docs need none.
- The statuses that any endpoint may send (503 when Redis or the database is down, 413 for a body over its cap),
  and Retry-After on every 429. There is no catch-all `default` response: a status the document does not list is
  a bug of the document or of the endpoint, and the fuzz test (tests/test_openapi.py) finds it.
- flask-openapi3 writes `securitySchemes: null` when there are none, which is invalid OpenAPI; it is replaced.
"""

from __future__ import annotations

import re
from typing import Any

from flask_openapi3 import OpenAPI
from pydantic import BaseModel

from api.auth import ADMIN_ENDPOINTS, PUBLIC_BLUEPRINTS, PUBLIC_ENDPOINTS
from api.schemas.books import BookRequest

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
SCHEME = "apiKey"
SECURITY_SCHEMES = {
    SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `python -m api.keys create`, as `Authorization: Bearer <key>`. Needed on every "
        "endpoint but /health and the docs when the farm has keys (API_KEYS_REQUIRED); operator endpoints need an "
        "admin key.",
    }
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
# gunicorn refuses a request line over its limit (limit_request_line, 4094 bytes) itself, with an HTML page.
URI_TOO_LONG = {
    "description": "The request line (path and query) is longer than 4094 bytes: the HTTP server (gunicorn) refuses "
    "it before the API sees it, with an HTML page rather than the error contract",
    "content": {"text/html": {"schema": {"type": "string"}}},
}
WHY = {
    "401": "No API key, or one that is unknown or revoked",
    "403": "An operator endpoint: it needs an admin key",
    "404": "No such resource (or no route for this path)",
    "413": "The request body is larger than its cap",
    "429": "A limit is reached: concurrent requests, jobs per tenant or queued segments",
    "503": "Redis, the database or the workers are not available, or this API process is shutting down",
}
BODY_METHODS = ("post", "put", "patch")
# Operations that take a JSON body as well as the form flask-openapi3 documents (it documents one body per route).
JSON_ALTERNATIVES: dict[tuple[str, str], type[BaseModel]] = {("/books", "post"): BookRequest}


def _takes_input(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters") or operation.get("requestBody"))


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _error(status: str, response: dict[str, Any] | None = None) -> dict[str, Any]:
    response = dict(response or {})
    response.setdefault("description", WHY.get(status, "Error"))
    response["content"] = {"application/json": {"schema": ERROR_REF}}
    if status == "429":
        response["headers"] = RETRY_AFTER
    return response


def _declares_own_model(response: dict[str, Any]) -> bool:
    """True for an error status answered with another model on purpose (/health's 503 is a HealthResponse)."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref")) and schema != ERROR_REF


def complete_document(spec: dict[str, Any], endpoints: dict[tuple[str, str], str]) -> dict[str, Any]:
    """`endpoints`: (OpenAPI path, method) -> Flask endpoint, to tell public and operator operations apart."""
    for path, path_item in spec.get("paths", {}).items():
        for method, operation in path_item.items():
            endpoint = endpoints.get((path, method), "")
            responses = operation.setdefault("responses", {})
            if "400" in responses and not _takes_input(operation):
                del responses["400"]  # nothing to validate: flask-openapi3 added it to every operation
            public = endpoint in PUBLIC_ENDPOINTS or endpoint.split(".")[0] in PUBLIC_BLUEPRINTS
            if public:
                operation["security"] = []
            else:
                operation["security"] = [{SCHEME: []}, {}]  # optional: a farm may run without keys
                responses.setdefault("401", {})
                responses.setdefault("503", {})
            if endpoint in ADMIN_ENDPOINTS:
                responses.setdefault("403", {})
            if method in BODY_METHODS and "requestBody" in operation:
                responses.setdefault("413", {})
            if operation.get("parameters"):
                responses["414"] = URI_TOO_LONG
            if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                # A path the router cannot match (an id with a newline, say) is a 404 before any check of the id.
                responses.setdefault("404", {})
            for status, response in list(responses.items()):
                if status.startswith(("4", "5")) and status != "414" and not _declares_own_model(response):
                    responses[status] = _error(status, response)
            responses.pop("default", None)
    components = spec.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    _add_json_alternatives(spec)
    return spec


def _add_json_alternatives(spec: dict[str, Any]) -> None:
    schemas = spec["components"].setdefault("schemas", {})
    for (path, method), model in JSON_ALTERNATIVES.items():
        operation = spec.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas[model.__name__] = schema
        content = operation.setdefault("requestBody", {}).setdefault("content", {})
        content["application/json"] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}


class FarmOpenAPI(OpenAPI):
    def generate_spec_json(self) -> None:
        super().generate_spec_json()
        endpoints = {
            (_openapi_path(rule.rule), method.lower()): rule.endpoint
            for rule in self.url_map.iter_rules()
            for method in rule.methods or ()
        }
        complete_document(self.spec_json, endpoints)
