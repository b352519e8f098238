"""Whether a worker may start on the device it finds: a GPU the host shows but torch cannot use is a refusal.

A host whose NVIDIA driver is too old for the CUDA runtime torch was built with (or whose torch is a CPU build)
lists its GPUs in `nvidia-smi` while `torch.cuda.is_available()` is False. Falling back to the CPU there would
serve at a fraction of the speed the machine was given for, with one log line to say so; the worker refuses to
start instead, unless USE_CPU=1 asks for the CPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from shared.settings import Settings

NVIDIA_SMI_TIMEOUT = 10.0


def listed_gpus() -> list[str]:
    """The GPUs `nvidia-smi -L` lists ("GPU 0: NVIDIA H100 ... (UUID: ...)"); none when it is missing or fails
    (no driver loaded: then nothing on the host can use a GPU either)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        result = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.startswith("GPU ")]


def gpus_hidden_on_purpose() -> bool:
    """CUDA_VISIBLE_DEVICES set to no device ("" or -1): this process was told to use no GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible is not None and visible.strip() in ("", "-1")


def unusable_gpu(settings: Settings, cuda_available: bool, torch_version: str, torch_cuda: str | None) -> str | None:
    """One line saying why the worker must not start, or None when it may."""
    if cuda_available or settings.USE_CPU or gpus_hidden_on_purpose():
        return None
    gpus = listed_gpus()
    if not gpus:
        return None
    built = f"built for CUDA {torch_cuda}" if torch_cuda else "a CPU-only build"
    return (
        f"nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0]}) but torch {torch_version} ({built}) cannot use CUDA "
        "(is the driver too old for that CUDA version?); fix the driver or torch, or set USE_CPU=1 to run on the CPU"
    )
