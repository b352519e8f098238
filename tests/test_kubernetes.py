"""The Kubernetes manifests (deploy/kubernetes/): every overlay rendered by kustomize (`kubectl kustomize`, offline)
and each object validated against the Kubernetes API's schemas (kubernetes-validate, strict: an unknown field is an
error); the farm's processes run as docker-compose.yml runs them; the autoscaling rules read metrics the farm
exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSION = "1.32.0"
CUSTOM = {"keda.sh/v1alpha1"}  # custom resources: no schema of the Kubernetes API's; checked by hand below


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed to render the manifests"
    done = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def compose_service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return dict(services[name])


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def exported_metrics() -> set[str]:
    """The metric names the farm's /metrics writes (its collectors name them as string literals)."""
    names: set[str] = set()
    for source in ("shared/metrics.py", "workers/metrics.py"):
        names |= set(re.findall(r'"(xtts_[a-z_]+)"', (ROOT / source).read_text()))
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_each_object_is_valid_kubernetes(overlay: str) -> None:
    docs = render(overlay)
    for doc in docs:
        if doc["apiVersion"] in CUSTOM:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert set(by_kind(docs, "Deployment")) == {"xtts-api", "xtts-worker", "xtts-flower"}
    assert set(by_kind(docs, "Service")) == {"xtts-api", "xtts-flower"}
    assert set(by_kind(docs, "Job")) == {"xtts-migrate"}
    assert set(by_kind(docs, "PodDisruptionBudget")) == {"xtts-api", "xtts-worker"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_processes_run_as_compose_runs_them_with_every_setting_from_the_config_map(overlay: str) -> None:
    docs = render(overlay)
    deployments, (config,) = by_kind(docs, "Deployment"), by_kind(docs, "ConfigMap").values()
    assert set(config["data"]) <= set(Settings.model_fields), "a ConfigMap key that is no setting"
    for name, service in (("xtts-api", "api"), ("xtts-worker", "worker"), ("xtts-flower", "flower")):
        assert container(deployments[name])["command"] == compose_service(service)["command"]
    (job,) = by_kind(docs, "Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == compose_service("migrate")["command"]
    pods = [d["spec"]["template"]["spec"] for d in [*deployments.values(), job]]
    for pod in pods:
        sources = pod["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in sources  # the generated, hashed name
        assert {"secretRef": {"name": "xtts-farm"}} in sources  # REDIS_URL, DATABASE_URL: made by the operator
        assert pod["securityContext"]["runAsNonRoot"] is True
    worker = container(deployments["xtts-worker"])
    assert worker["readinessProbe"]["exec"]["command"] == compose_service("worker")["healthcheck"]["test"][1:]
    assert "kill -TERM 1" in " ".join(worker["lifecycle"]["preStop"]["exec"]["command"])  # hands segments back
    gpus = worker["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus == ("1" if overlay == "gpu" else None)


def test_workers_scale_on_the_farms_own_metrics_with_keda_or_a_horizontal_autoscaler() -> None:
    exported = exported_metrics()
    gpu = render("gpu")
    (scaled,) = by_kind(gpu, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] in by_kind(gpu, "Deployment")
    queries = {t["name"]: t["metadata"]["query"] for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"}
    assert set(queries) == {"queued-audio", "live-load"}
    for query in queries.values():
        named = set(re.findall(r"xtts_[a-z_]+", query))
        assert named and named <= exported, f"{query}: {named - exported} is not a metric the farm exports"
    cpu = render("cpu")
    (autoscaler,) = by_kind(cpu, "HorizontalPodAutoscaler").values()
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "xtts-worker",
    }
    external = [m["external"]["metric"]["name"] for m in autoscaler["spec"]["metrics"]]
    assert external == ["xtts_backlog_audio_seconds", "xtts_live_load"]
    assert "xtts_backlog_audio_seconds" in exported  # xtts_live_load is prometheus-adapter's (components/hpa)
    assert not by_kind(cpu, "ScaledObject") and not by_kind(gpu, "HorizontalPodAutoscaler")  # one owner each
