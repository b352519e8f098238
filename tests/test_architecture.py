"""The layers the design card asks for, checked on every import in the code and on what the API really loads.

api/           HTTP only: imports shared/ and voices_store/, never workers/ nor the model stack
workers/       Celery tasks and the model: imports shared/ and voices_store/, never api/
voices_store/  voices: imports shared/ only
shared/        settings, database, streams, text: imports no other layer of the project
client/        the Python client and CLI: HTTP only, imports no module of the farm
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tools.localfarm import ROOT

PROJECT_LAYERS = ("api", "workers", "voices_store", "shared", "client")
MODEL_STACK = ("torch", "torchaudio", "TTS", "transformers")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "shared": ("api", "workers", "voices_store", *MODEL_STACK),
    "voices_store": ("api", "workers", *MODEL_STACK),
    "workers": ("api",),
    "api": ("workers", *MODEL_STACK),
    "client": ("api", "workers", "voices_store", "shared", "tools", *MODEL_STACK),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every import statement in a file, wherever it stands (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def layer_violations(layer: str, root: Path = ROOT) -> list[str]:
    return [
        f"{path.relative_to(root)}:{line} imports {module}"
        for path in sorted((root / layer).rglob("*.py"))
        for line, module in imported_modules(path)
        if module in FORBIDDEN[layer]
    ]


@pytest.mark.parametrize("layer", PROJECT_LAYERS)
def test_each_layer_imports_only_what_it_may(layer: str) -> None:
    assert layer_violations(layer) == []


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The rule above is not vacuous: a shared module importing voices_store is reported."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "leak.py").write_text("def f():\n    from voices_store.latents import Latents\n")
    assert layer_violations("shared", tmp_path) == ["shared/leak.py:2 imports voices_store"]


def _loaded_by(code: str, forbidden: tuple[str, ...] = (*MODEL_STACK, "workers")) -> list[str]:
    """The modules of the `forbidden` top-level packages that running `code` in a fresh interpreter loads."""
    code += (
        "\nimport sys\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_the_api_never_loads_the_model_stack_even_transitively() -> None:
    assert _loaded_by("from api.app import create_app\ncreate_app()\nfrom api import wsgi") == []


def test_the_shared_layer_never_loads_the_model_stack() -> None:
    modules = sorted(p.stem for p in (ROOT / "shared").glob("*.py") if p.stem != "__init__")
    assert _loaded_by("\n".join(f"import shared.{m}" for m in modules)) == []


# The request and response models and the wire framing are about shapes only: they must not drag in the services.
SERVICES = ("redis", "sqlalchemy", "celery", "kombu")
LIGHT_API_MODULES = (
    "api.framing",
    *sorted(f"api.schemas.{p.stem}" for p in (ROOT / "api" / "schemas").glob("*.py") if p.stem != "__init__"),
)


def test_the_models_and_the_framing_load_no_redis_nor_sql_even_transitively() -> None:
    assert len(LIGHT_API_MODULES) >= 8  # framing, common and one module per capability
    assert _loaded_by("\n".join(f"import {module}" for module in LIGHT_API_MODULES), SERVICES) == []


def test_the_light_module_check_sees_what_the_delivery_loads() -> None:
    """Not vacuous: the delivery machinery does load Redis and SQL, and the check reports it."""
    loaded = _loaded_by("import api.delivery", SERVICES)
    assert "redis" in loaded and "sqlalchemy" in loaded
