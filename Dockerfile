# Two images from one file: `api` (Flask, Celery client, Flower, migrations; no torch) and `worker` (the XTTS stack).
# Both run as the unprivileged user `xtts` (uid 10001); /models, where workers download or generate the model, is
# theirs (a new named volume mounted there takes this ownership).
FROM python:3.11-slim-bookworm AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin xtts \
 && mkdir -p /models \
 && chown xtts:xtts /models
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

FROM base AS api
COPY requirements-api.txt ./
RUN pip install -r requirements-api.txt
COPY . .
USER xtts
EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "api.wsgi:app"]

FROM base AS worker
COPY requirements-api.txt requirements.txt ./
RUN pip install -r requirements.txt
COPY . .
USER xtts
CMD ["celery", "-A", "workers.celery_app", "worker", "-l", "INFO"]
