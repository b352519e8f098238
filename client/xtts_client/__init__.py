"""Python client of the XTTS synthesis farm (HTTP, and a WebSocket for voice agents), and the `xtts` command line."""

from xtts_client.client import AudioStream, JobFailed, JobProgress, JobUpdate, XTTSClient
from xtts_client.errors import FarmError, FarmUnreachable, StreamBroken, UnsupportedFormat, XTTSError
from xtts_client.resume import AudioEvent, EndEvent, RetryPolicy
from xtts_client.speaking import SpeakingSession

__all__ = [
    "AudioEvent",
    "AudioStream",
    "EndEvent",
    "FarmError",
    "FarmUnreachable",
    "JobFailed",
    "JobProgress",
    "JobUpdate",
    "RetryPolicy",
    "SpeakingSession",
    "StreamBroken",
    "UnsupportedFormat",
    "XTTSClient",
    "XTTSError",
]
