"""Languages, built-in speakers, health with the live workers' models, and the OpenAPI/Swagger docs."""

from __future__ import annotations

import requests

from shared.languages import XTTS_V2_LANGUAGES
from tools.localfarm import DEV_SPEAKER, Farm


def test_languages_are_the_models(farm: Farm) -> None:
    response = requests.get(farm.url("/languages"), timeout=10)
    assert response.headers["X-Languages-Source"] == "workers"
    assert sorted(response.json()) == sorted(XTTS_V2_LANGUAGES)  # a bare list, as the official server answers


def test_available_speakers_are_the_checkpoints(farm: Farm) -> None:
    speakers = requests.get(farm.url("/available_speakers"), timeout=10).json()["speakers"]
    assert len(speakers) >= 2 and DEV_SPEAKER in speakers


def test_health_reports_services_and_every_worker_with_its_model(farm: Farm) -> None:
    response = requests.get(farm.url("/health"), timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["api"] == "ok"
    assert body["redis"]["ok"] and body["database"]["ok"]
    assert len(body["workers"]) == 2
    for worker in body["workers"]:
        model = worker["model"]
        assert model["name"] == "dev" and model["dev_random_weights"] is True
        assert model["device"] == "cpu" and model["sample_rate"] == 24000
        assert worker["pid"] > 0 and worker["name"]


def test_swagger_ui_at_root_documents_every_endpoint(farm: Farm) -> None:
    root = requests.get(farm.url("/"), timeout=10)
    assert root.status_code == 200 and "swagger-ui" in root.text.lower()
    spec = requests.get(farm.url("/openapi/openapi.json"), timeout=10).json()
    paths = spec["paths"]
    expected = {
        "/tts_stream": "post",
        "/tts": "post",
        "/jobs": "post",
        "/jobs/{job_id}": "get",
        "/jobs/{job_id}/audio": "get",
        "/jobs/{job_id}/stream": "get",
        "/stream_status/{session_id}": "get",
        "/stream_cancel/{session_id}": "delete",
        "/languages": "get",
        "/available_speakers": "get",
        "/studio_speakers": "get",
        "/health": "get",
    }
    for path, method in expected.items():
        assert method in paths.get(path, {}), f"{method.upper()} {path} is not documented"
        assert paths[path][method].get("summary") or paths[path][method].get("description")


def test_health_without_a_worker_is_503_with_the_reason_and_the_api_health_200(client) -> None:
    """No worker in this in-process API: the farm cannot synthesize (503, `no_workers`, in words why), while the API
    itself, Redis and the database serve (a load balancer keeps the API in service)."""
    health = client.get("/health")
    assert health.status_code == 503
    body = health.get_json()
    assert body["status"] == "no_workers" and body["live_workers"] == 0
    assert "no synthesis worker is running" in body["reason"]
    api = client.get("/health/api")
    assert api.status_code == 200 and api.get_json()["status"] == "no_workers"
