"""The Celery task names and queues, written once: the API sends tasks by name (it never imports worker code),
and the workers register their functions under the same names."""

from __future__ import annotations

SYNTHESIZE_SEGMENT = "xtts.synthesize_segment"
CLONE_VOICE = "xtts.clone_voice"
BLEND_VOICE = "xtts.blend_voice"

VOICES_QUEUE = "voices"
# Synthesis has two queues, one per class of work (shared/priority.py); a worker empties them in this order.
SYNTHESIS_QUEUE = "synthesis"  # live work: a listener is waiting
BULK_QUEUE = "synthesis.bulk"  # bulk work: nobody listens in real time
