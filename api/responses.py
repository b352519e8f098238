"""JSON responses built from the response models of api/schemas/, so that the OpenAPI document and what an
endpoint returns cannot drift apart."""

from __future__ import annotations

from flask import Response
from pydantic import BaseModel


def json_model(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), status=status, mimetype="application/json", headers=headers)
