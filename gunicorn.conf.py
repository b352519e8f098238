"""Gunicorn's options for the API, written once: `make run` (Procfile), the Docker image and the tests' farm all
start `gunicorn -c gunicorn.conf.py api.wsgi:app`."""

from shared import logs
from shared.settings import get_settings

_settings = get_settings()

bind = f"{_settings.HOST}:{_settings.PORT}"
workers = _settings.API_PROCESSES
# Streaming responses hold a thread each while they wait for audio (blocking XREAD): threads, not processes,
# carry the concurrency; MAX_CONCURRENT_REQUESTS bounds the synthesis responses per process, and as many again may
# wait for their turn (api/limits.py). The pool leaves at least 32 threads to every other endpoint besides those.
worker_class = "gthread"
threads = max(64, 2 * _settings.MAX_CONCURRENT_REQUESTS + 32)
# A /tts request waits for the whole synthesis; long texts take minutes.
timeout = 600
graceful_timeout = 30
accesslog = "-"
# gunicorn's own lines in the farm's format (LOG_FORMAT), with the job id of a job's request (shared/logs.py).
logconfig_dict = logs.gunicorn_logconfig(_settings)
