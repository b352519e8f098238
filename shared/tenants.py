"""Tenants: who owns a job or a saved voice. Each API key belongs to one tenant; with keys off, everything belongs
to the default tenant (and so does everything made before tenants existed)."""

from __future__ import annotations

import re

DEFAULT_TENANT = "default"
# Slugs, like voice ids: they appear in voice keys ("tenant/voice") and logs, never in paths.
TENANT_ID = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,63}\Z")


def is_tenant_id(value: str) -> bool:
    return TENANT_ID.match(value) is not None
