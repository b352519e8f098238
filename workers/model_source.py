"""Where the worker's XTTS checkpoint comes from: CUSTOM_MODEL_PATH, the generated dev model, or coqui's
downloader for the official XTTS-v2 weights."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.settings import Settings
from workers import devmodel
from workers.errors import ModelUnavailable

log = logging.getLogger(__name__)

XTTS_V2_NAME = "tts_models/multilingual/multi-dataset/xtts_v2"
REQUIRED_FILES = ("config.json", "model.pth", "vocab.json")


@dataclass(frozen=True)
class ModelSource:
    name: str  # what the registry and /health show
    path: Path
    dev: bool  # random weights: noise, not speech


def _check_layout(path: Path, origin: str) -> None:
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise ModelUnavailable(f"{origin} {path} is not an XTTS-v2 checkpoint directory: missing {', '.join(missing)}")


def _download_xtts_v2(settings: Settings) -> Path:
    if not settings.COQUI_TOS_AGREED:
        raise ModelUnavailable(
            "XTTS-v2 is licensed under the Coqui Public Model License (https://coqui.ai/cpml): set COQUI_TOS_AGREED=1 "
            "to accept it, or use XTTS_MODEL=dev (offline random-weight model) or CUSTOM_MODEL_PATH=<checkpoint dir>"
        )
    os.environ["COQUI_TOS_AGREED"] = "1"  # coqui's downloader reads the variable itself
    from TTS.utils.manage import ModelManager

    try:
        model_path, _config, _item = ModelManager(output_prefix=settings.MODEL_DIR, progress_bar=False).download_model(
            XTTS_V2_NAME
        )
    except Exception as exc:  # network, hub or disk errors all end the same way for the operator
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ModelUnavailable(
            f"cannot download XTTS-v2 ({type(exc).__name__}: {reason}); start the farm with XTTS_MODEL=dev for the "
            "offline random-weight model, or set CUSTOM_MODEL_PATH to a local XTTS-v2 checkpoint directory"
        ) from exc
    path = Path(model_path)
    return path if path.is_dir() else path.parent


def resolve(settings: Settings) -> ModelSource:
    """Pick the checkpoint directory the settings ask for, generating or downloading it if needed."""
    if settings.CUSTOM_MODEL_PATH:
        path = Path(settings.CUSTOM_MODEL_PATH).expanduser()
        _check_layout(path, "CUSTOM_MODEL_PATH")
        return ModelSource(f"custom:{path}", path, (path / devmodel.DEV_MARKER).is_file())
    choice = settings.XTTS_MODEL.strip().lower()
    if choice == "dev":
        path = Path(settings.MODEL_DIR) / "dev"
        if not devmodel.is_complete(path):
            # In a child process: the worker's parent must not start torch's thread pools before it forks
            # (OpenMP is not fork-safe; a forked child would hang in its first parallel region).
            subprocess.run([sys.executable, "-m", "workers.devmodel", "--out", str(path)], check=True)
        return ModelSource("dev", path, True)
    if choice in ("xtts_v2", "xtts-v2", XTTS_V2_NAME):
        path = _download_xtts_v2(settings)
        _check_layout(path, "the downloaded XTTS-v2")
        return ModelSource("xtts_v2", path, False)
    raise ModelUnavailable(f"XTTS_MODEL={settings.XTTS_MODEL!r} is not one of: xtts_v2, dev (or set CUSTOM_MODEL_PATH)")


# Read from each end of the weights: enough to tell checkpoints apart without reading gigabytes at every start.
_SAMPLED_BYTES = 1 << 20


def fingerprint(path: Path) -> str:
    """A digest that changes with the checkpoint: its config and vocabulary whole, its weights' size and both ends.
    Audio reused across workers (shared/result_cache.py) must come from the same model; workers on other machines
    with a copy of the same checkpoint agree."""
    digest = hashlib.sha256()
    for name in ("config.json", "vocab.json"):
        digest.update((path / name).read_bytes())
    weights = path / "model.pth"
    size = weights.stat().st_size
    digest.update(str(size).encode())
    with weights.open("rb") as f:
        digest.update(f.read(_SAMPLED_BYTES))
        f.seek(max(0, size - _SAMPLED_BYTES))
        digest.update(f.read(_SAMPLED_BYTES))
    return digest.hexdigest()[:32]
