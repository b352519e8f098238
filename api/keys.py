"""API keys: made, listed and revoked by the operator on the command line; only their hashes are stored.

    python -m api.keys create --name alice [--tenant acme] [--admin]   # prints the key, once
    python -m api.keys list
    python -m api.keys revoke alice

A key is `xtts_` and 43 characters of `secrets.token_urlsafe(32)` (256 random bits). The database keeps its SHA-256
only: a fast hash is enough for random keys of that size (there is no dictionary to try), and a lookup is then one
indexed query. Each key belongs to a tenant (`--tenant`, by default the key's name); several keys may share one, so
a key can be rotated (create the new one, move the clients, revoke the old one) without losing the tenant's voices.
Creating the first key switches authentication on under API_KEYS_REQUIRED=auto; revoked keys still count, so
revoking the last one locks the API rather than opening it.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from shared.db import session_scope
from shared.errors import InvalidInput
from shared.models import ApiKey, utcnow
from shared.tenants import is_tenant_id

KEY_PREFIX = "xtts_"
NAME_MAX = 100


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    tenant: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(name: str, tenant: str | None = None, *, admin: bool = False) -> tuple[str, KeyInfo]:
    """(the key, its record): the key is returned here and never stored."""
    tenant = tenant or name.lower()
    if not name.strip() or len(name) > NAME_MAX:
        raise InvalidInput(f"a key's name must be 1 to {NAME_MAX} characters")
    if not is_tenant_id(tenant):
        raise InvalidInput(
            f"tenant {tenant!r} is not valid: 1 to 64 lowercase letters, digits, '-' or '_' (give --tenant)"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=secrets.token_hex(6),
        name=name,
        tenant=tenant,
        key_hash=hash_key(key),
        admin=admin,
        created_at=utcnow(),
        revoked_at=None,
    )
    try:
        with session_scope() as s:
            s.add(row)
    except IntegrityError as exc:
        raise InvalidInput(f"a key named {name!r} exists already (revoked keys keep their names)") from exc
    return key, _info(row)


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.tenant, row.admin, row.created_at, row.revoked_at)


def find_key(key: str) -> KeyInfo | None:
    """The active key record for a presented key, or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    with session_scope() as s:
        row = s.execute(
            select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
        ).scalar_one_or_none()
        return _info(row) if row else None


def any_key_exists() -> bool:
    """Whether any key was ever made (revoked ones count)."""
    with session_scope() as s:
        return s.execute(select(ApiKey.id).limit(1)).first() is not None


def list_keys() -> list[KeyInfo]:
    with session_scope() as s:
        return [_info(row) for row in s.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars()]


def revoke_key(name_or_id: str) -> bool:
    """Revoke the key with this name or id; False when there is no such active key."""
    with session_scope() as s:
        result = s.execute(
            update(ApiKey)
            .where((ApiKey.name == name_or_id) | (ApiKey.id == name_or_id), ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api.keys", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key and print it (once)")
    create.add_argument("--name", required=True, help="a label for the key, unique")
    create.add_argument("--tenant", help="the tenant whose voices and jobs the key reaches (default: the name)")
    create.add_argument("--admin", action="store_true", help="may also use the operator endpoints")
    commands.add_parser("list", help="list keys (never the keys themselves)")
    revoke = commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key", help="its name or id")
    ns = parser.parse_args(argv)
    try:
        if ns.command == "create":
            key, info = create_key(ns.name, ns.tenant, admin=ns.admin)
            role = "admin " if info.admin else ""
            print(f"created {role}key {info.name!r} (id {info.id}) for tenant {info.tenant!r}; it is shown only once:")
            print(key)
        elif ns.command == "list":
            for k in list_keys():
                state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
                print(f"{k.id}  {k.name:<20} tenant={k.tenant:<16} {'admin ' if k.admin else ''}{state}")
        elif not revoke_key(ns.key):
            print(f"no active key named {ns.key!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {ns.key!r}")
    except InvalidInput as exc:
        print(exc.message, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
