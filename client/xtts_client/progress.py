"""The progress bar of a followed job, on stderr: segments delivered of all, and seconds of audio."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from xtts_client.client import JobProgress


class JobBar:
    def __init__(self, job_id: str, enabled: bool = True) -> None:
        self.job_id = job_id
        self._bar: tqdm | None = None
        self._enabled = enabled
        self._drawn = 0.0

    def update(self, progress: JobProgress) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = tqdm(
                total=progress.segments_total,
                file=sys.stderr,
                desc=f"job {self.job_id[:8]}",
                bar_format="{desc} {bar} {n}/{total} segments, {postfix} [{elapsed}]",
                mininterval=0.2,
                dynamic_ncols=True,
            )
        self._bar.n = progress.segments_done
        self._bar.set_postfix_str(f"{progress.audio_seconds:.1f} s of audio", refresh=False)
        # Drawn a few times a second (a long job has thousands of chunks), and always at the end.
        if progress.state in ("succeeded", "failed", "cancelled") or time.monotonic() - self._drawn >= 0.2:
            self._bar.refresh()
            self._drawn = time.monotonic()

    def note(self, message: str) -> None:
        """A line of its own, above the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
