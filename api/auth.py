"""Who is calling: `Authorization: Bearer <key>` (the header the `openai` client sends) names a key, the key a tenant.

API_KEYS_REQUIRED decides whether keys are needed:
- true: on every endpoint except the public ones (/health, the OpenAPI document and Swagger UI);
- false: never; every caller is the operator of the default tenant (a machine of your own only);
- auto (the default, unset): as soon as any key exists in the database (revoked ones count: revoking the last key
  locks the API rather than opening it). Until then, only clients on this machine (loopback addresses) are
  served, as the operator of the default tenant, so `make run` works on localhost with no key while nobody on
  the network can use a farm that has none.

Voices and jobs belong to the caller's tenant; another tenant's are answered 404, as if they did not exist.
Operator endpoints (cache clearing and statistics, worker details in /health) need an admin key.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass

from flask import Flask, g, request
from sqlalchemy.exc import SQLAlchemyError

from api import keys
from shared.errors import FarmError
from shared.settings import get_settings
from shared.tenants import DEFAULT_TENANT

# Served to anyone: health (without worker details unless admin), the OpenAPI document, Swagger UI and the web page's
# files (the page holds no data: it asks for a key when the API calls it makes need one).
PUBLIC_ENDPOINTS = frozenset({"info.health", "info.health_api", "info.index", "static"})
# The voice agents' sockets find their caller themselves: ElevenLabs' clients may send the key in the first message.
PUBLIC_BLUEPRINTS = frozenset({"openapi", "swagger", "webpage", "agent_sockets"})
ADMIN_ENDPOINTS = frozenset({"cache.cache_clear", "cache.cache_stats", "metrics.metrics"})


class MissingKey(FarmError):
    status, code = 401, "api_key_required"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="xtts-farm"'}


class InvalidKey(MissingKey):
    code = "invalid_api_key"


class AdminRequired(FarmError):
    status, code = 403, "admin_key_required"


@dataclass(frozen=True)
class Caller:
    tenant: str
    admin: bool


OPERATOR = Caller(DEFAULT_TENANT, admin=True)
ANONYMOUS = Caller(DEFAULT_TENANT, admin=False)


class KeysState:
    """Whether keys are required now; under `auto`, a key seen once keeps them required for the process."""

    def __init__(self) -> None:
        self._seen_a_key = False
        self._lock = threading.Lock()

    def required(self) -> bool:
        configured = get_settings().API_KEYS_REQUIRED
        if configured is not None:
            return configured
        if not self._seen_a_key and keys.any_key_exists():
            with self._lock:
                self._seen_a_key = True
        return self._seen_a_key


def _is_public() -> bool:
    if request.method == "OPTIONS" or request.routing_exception is not None:
        return True  # preflights, and 404/405 (the route map is public in the OpenAPI document anyway)
    return request.endpoint in PUBLIC_ENDPOINTS or (request.blueprint or "") in PUBLIC_BLUEPRINTS


def _local_client() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _presented_key() -> str | None:
    """`Authorization: Bearer <key>` or, as ElevenLabs' clients send it, `xi-api-key: <key>`; on a WebSocket also
    its query's `authorization` (a browser cannot set headers on one)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if xi_key := request.headers.get("xi-api-key", "").strip():
        return xi_key
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return bearer_value(request.args.get("authorization", ""))
    return None


def bearer_value(value: str) -> str | None:
    """A key as written in a query or a message: `Bearer <key>` or the key alone."""
    scheme, _, token = value.strip().partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else value.strip()
    return key or None


def caller_of_key(key: str | None) -> Caller | None:
    """The caller a key names (None: no such key, or revoked)."""
    found = keys.find_key(key) if key else None
    return Caller(found.tenant, found.admin) if found is not None else None


def identify(state: KeysState) -> Caller:
    """The caller of this request, or MissingKey / InvalidKey (public endpoints: ANONYMOUS instead)."""
    if not _is_public():
        return _identify(state, public=False)
    try:
        return _identify(state, public=True)
    except SQLAlchemyError:  # the database is down: /health must still answer (and say so)
        return ANONYMOUS


def _identify(state: KeysState, *, public: bool) -> Caller:
    if not state.required():
        if get_settings().API_KEYS_REQUIRED is False or _local_client():
            return OPERATOR
        if public:
            return ANONYMOUS
        raise MissingKey(
            "this farm has no API keys yet, so it serves only clients on its own machine; the operator creates one "
            "with `python -m api.keys create --name NAME` and gives it to you as `Authorization: Bearer <key>`"
        )
    presented = _presented_key()
    if (found := caller_of_key(presented)) is not None:
        return found
    if public:
        return ANONYMOUS
    if presented is None:
        raise MissingKey("this endpoint needs an API key: send `Authorization: Bearer <key>` (or `xi-api-key: <key>`)")
    raise InvalidKey("the API key is not valid (unknown or revoked)")


def caller() -> Caller:
    """The caller of the current request (set before every request)."""
    found: Caller = g.caller
    return found


def register(app: Flask) -> None:
    state = KeysState()

    @app.before_request
    def _authenticate() -> None:
        g.caller = identify(state)
        if request.endpoint in ADMIN_ENDPOINTS and not g.caller.admin:
            raise AdminRequired("this operator endpoint needs an admin API key")
