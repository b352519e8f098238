"""The API's OpenAPI document: flask-openapi3's, with the farm's one error contract declared everywhere.

flask-openapi3 declares its validation response as an *array* of the validation model on every operation,
including those that take no input, and writes `securitySchemes: null` when there are none (invalid OpenAPI).
The farm answers every error with one `ErrorResponse` object, so the document says exactly that.
"""

from __future__ import annotations

from typing import Any

from flask_openapi3 import OpenAPI

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
DEFAULT_ERROR = {
    "description": "Any other error (a service or the workers unavailable, an internal error), in the error contract",
    "content": {"application/json": {"schema": ERROR_REF}},
}


def _takes_input(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters") or operation.get("requestBody"))


def declare_error_contract(spec: dict[str, Any]) -> dict[str, Any]:
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            if "400" in responses and not _takes_input(operation):
                del responses["400"]  # nothing to validate: flask-openapi3 added it to every operation
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
            responses.setdefault("default", DEFAULT_ERROR)
    components = spec.get("components", {})
    if components.get("securitySchemes") is None:
        components.pop("securitySchemes", None)
    return spec


class FarmOpenAPI(OpenAPI):
    def generate_spec_json(self) -> None:
        super().generate_spec_json()
        declare_error_contract(self.spec_json)
