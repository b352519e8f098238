"""The GPU path's known faults, checked where no GPU is: exactness without TF32, sampling without a host sync per
row, every tensor on the engine's device, and a worker that refuses a GPU it cannot use (issue 24).

Tests marked `cuda` run only on a GPU (scripts/gpu_check.sh runs them there)."""

from __future__ import annotations

import torch

from workers.engine import XttsEngine


# --- TF32 ----------------------------------------------------------------------------------------------
def test_the_tests_engine_runs_without_tf32(engine: XttsEngine) -> None:
    """Exactness is asserted on this engine (SNR > 120 dB, latents within 1e-4): TF32 would break that on a GPU."""
    assert not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32
