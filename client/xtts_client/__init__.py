"""Python client of the XTTS synthesis farm (HTTP only), and the `xtts` command line."""

from xtts_client.client import AudioStream, JobFailed, JobProgress, JobUpdate, XTTSClient
from xtts_client.errors import FarmError, FarmUnreachable, StreamBroken, UnsupportedFormat, XTTSError
from xtts_client.resume import AudioEvent, EndEvent, RetryPolicy

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
    "StreamBroken",
    "UnsupportedFormat",
    "XTTSClient",
    "XTTSError",
]
