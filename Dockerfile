# Two images from one file: `api` (Flask, Celery client, migrations; no torch) and `worker` (the XTTS stack).
FROM python:3.11-slim-bookworm AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

FROM base AS api
COPY requirements-api.txt ./
RUN pip install -r requirements-api.txt
COPY . .
EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py", "api.wsgi:app"]

FROM base AS worker
COPY requirements-api.txt requirements.txt ./
RUN pip install -r requirements.txt
COPY . .
CMD ["celery", "-A", "workers.celery_app", "worker", "-l", "INFO"]
