"""`GET /metrics`: the whole farm in Prometheus's text format (shared/metrics.py says where each figure comes from).

With API keys on, it needs an admin key, as the other operator endpoints: it names workers, hosts and load.
Prometheus sends one with `authorization: {credentials: <key>}` (Bearer) in its scrape config. It is left out of
the OpenAPI document, like Swagger UI's redirect: it is for Prometheus, not for API clients.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared.metrics import FarmCollector
from shared.redis_client import get_redis

bp = APIBlueprint("metrics", __name__)


@bp.get("/metrics", doc_ui=False)
def metrics() -> Response:
    """Prometheus metrics of the whole farm (admin key when keys are on)."""
    farm = CollectorRegistry(auto_describe=False)
    farm.register(FarmCollector(get_redis()))
    return Response(generate_latest(farm), mimetype=CONTENT_TYPE_LATEST)
