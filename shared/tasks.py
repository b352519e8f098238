"""The Celery task names and queues, written once: the API sends tasks by name (it never imports worker code),
and the workers register their functions under the same names."""

from __future__ import annotations

SYNTHESIZE_SEGMENT = "xtts.synthesize_segment"
CLONE_VOICE = "xtts.clone_voice"

SYNTHESIS_QUEUE = "synthesis"
VOICES_QUEUE = "voices"
