"""VOICES_DIR: saved voices as plain files, the single-server XTTS API's "directory for storing saved voices".

The farm's voice store is the SQL database (every worker on every machine reads it; no shared disk).
VOICES_DIR keeps that meaning as the place voices live on disk: `import` loads every `<id>.json`
there into the store (run by `make run` at start), `export` writes every stored voice there. The files
hold the JSON /clone_speaker returns (`gpt_cond_latent`, `speaker_embedding`, optional `name`,
`description`): plain numbers, never pickles.

    python -m voices_store.files import [DIR] [--tenant T]
    python -m voices_store.files export [DIR] [--tenant T]

Both work on one tenant's voices: the default tenant's (the only one when API keys are off) unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from shared.errors import FarmError
from shared.settings import get_settings
from shared.tenants import DEFAULT_TENANT
from voices_store import store
from voices_store.ids import VOICE_ID, voice_key
from voices_store.latents import parse_latents

log = logging.getLogger(__name__)


def import_dir(directory: Path, tenant: str = DEFAULT_TENANT) -> list[str]:
    """Store every valid `<id>.json` whose id the tenant has not stored yet; returns the ids imported."""
    imported = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        voice_id = path.stem
        if not VOICE_ID.match(voice_id):
            log.warning("skipping %s: %r is not a valid voice id", path, voice_id)
            continue
        if store.voice_exists(tenant, voice_id):
            continue
        try:
            data = json.loads(path.read_text())
            latents = parse_latents(data["gpt_cond_latent"], data["speaker_embedding"], None)
            store.save_voice(
                tenant,
                voice_id,
                latents,
                name=str(data.get("name", "")),
                description=str(data.get("description", "")),
                source="import",
            )
        except (ValueError, KeyError, TypeError, FarmError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        imported.append(voice_id)
    return imported


def export_dir(directory: Path, tenant: str = DEFAULT_TENANT) -> list[str]:
    """Write every voice of the tenant as `<id>.json` (atomically: a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    exported: list[str] = []
    page = 1
    while True:
        _total, voices = store.list_voices(tenant, page, 200)
        if not voices:
            return exported
        for info in voices:
            latents = store.load_latents(voice_key(tenant, info.id))
            body = {"name": info.name, "description": info.description, **latents.to_json()}
            with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as tmp:
                json.dump(body, tmp)
            os.replace(tmp.name, directory / f"{info.id}.json")
            exported.append(info.id)
        page += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("import", "export"))
    parser.add_argument("directory", nargs="?", type=Path, default=None, help="default: VOICES_DIR")
    parser.add_argument("--tenant", default=DEFAULT_TENANT, help=f"whose voices (default: {DEFAULT_TENANT})")
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    directory = ns.directory or Path(get_settings().VOICES_DIR)
    done = (import_dir if ns.action == "import" else export_dir)(directory, ns.tenant)
    log.info("%sed %d voices %s %s", ns.action, len(done), "from" if ns.action == "import" else "to", directory)


if __name__ == "__main__":
    main()
