"""The project's layers, checked on every import in the code and on what the API really loads; and no import cycle.

api/           HTTP only: imports shared/ and voices_store/, never workers/ nor the model stack
workers/       Celery tasks and the model: imports shared/ and voices_store/, never api/
voices_store/  voices: imports shared/ only
shared/        settings, database, streams, text: imports no other layer of the project
client/        the Python client and CLI: HTTP only, imports no module of the farm
celery_config  the Celery settings the API and the workers share: imports shared/ only
tools/         runs and drives farms from the outside (tests, load tests): never the farm's code nor the model
benchmarks/    measures any layer, with the tools; never the tests
No production layer imports tools/, benchmarks/ or tests/.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

from tools.localfarm import ROOT

PROJECT_LAYERS = ("api", "workers", "voices_store", "shared", "client", "celery_config", "tools", "benchmarks")
MODEL_STACK = ("torch", "torchaudio", "TTS", "transformers")
NOT_PRODUCTION = ("tools", "benchmarks", "tests")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "shared": ("api", "workers", "voices_store", "celery_config", *NOT_PRODUCTION, *MODEL_STACK),
    "voices_store": ("api", "workers", *NOT_PRODUCTION, *MODEL_STACK),
    "workers": ("api", *NOT_PRODUCTION),
    "api": ("workers", *NOT_PRODUCTION, *MODEL_STACK),
    "client": ("api", "workers", "voices_store", "shared", "celery_config", *NOT_PRODUCTION, *MODEL_STACK),
    "celery_config": ("api", "workers", "voices_store", *NOT_PRODUCTION, *MODEL_STACK),
    "tools": ("api", "workers", "voices_store", "benchmarks", "tests", *MODEL_STACK),
    "benchmarks": ("tests",),
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


def layer_files(layer: str, root: Path = ROOT) -> list[Path]:
    """A layer's files: a package's modules, or a single module (celery_config.py)."""
    module = root / f"{layer}.py"
    return [module] if module.is_file() else sorted((root / layer).rglob("*.py"))


def layer_violations(layer: str, root: Path = ROOT) -> list[str]:
    return [
        f"{path.relative_to(root)}:{line} imports {module}"
        for path in layer_files(layer, root)
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
    (tmp_path / "celery_config.py").write_text("import tools.localfarm\n")  # a one-module layer too
    assert layer_violations("celery_config", tmp_path) == ["celery_config.py:1 imports tools"]


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


# --- import cycles ---------------------------------------------------------------------------------------------
# Every module of the project, by its import name. The client is a package of its own (`xtts_client`, in client/).
SOURCE_ROOTS: dict[str, tuple[str, ...]] = {
    "": ("api", "workers", "shared", "voices_store", "tools", "benchmarks", "celery_config.py"),
    "client": ("xtts_client",),
}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} for every module of the project (a package is its __init__.py)."""
    modules: dict[str, Path] = {}
    for base, entries in SOURCE_ROOTS.items():
        top = root / base if base else root
        for entry in entries:
            path = top / entry
            files = [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))
            for file in files:
                if not file.exists():
                    continue
                parts = list(file.relative_to(top).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                modules[".".join(parts)] = file
    return modules


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load: `from a import b` loads a.b if that is a module, else a."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    base = ".".join(p for p in (package if node.level else "", node.module or "") if p)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the project modules it imports}, from every import statement wherever it stands (in functions too:
    a function-level import only postpones a cycle to the first call). Importing a submodule does not count as
    importing its package: Python has the package in sys.modules by then."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = _imported_names(node, name, path.name == "__init__.py")
                if isinstance(node, ast.ImportFrom) and any(n in modules for n in names[1:]):
                    names = names[1:]  # `from package import submodule`: the submodules, not the package
                graph[name] |= {n for n in names if n in modules and n != name}
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (its modules in import order, the first repeated at the end), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))
    return None


def test_no_module_imports_itself_through_others() -> None:
    cycle = import_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_catches_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    """Not vacuous: two modules of a tree that import each other, one of them inside a function, are reported."""
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "__init__.py").write_text("")
    (tmp_path / "workers" / "a.py").write_text("from workers.b import size\n")
    (tmp_path / "workers" / "b.py").write_text("def size():\n    from . import a\n    return 1\n")
    (tmp_path / "workers" / "c.py").write_text("from workers import a, b\n")
    graph = import_graph(tmp_path)
    assert graph["workers.c"] == {"workers.a", "workers.b"}
    cycle = import_cycle(graph)
    assert cycle is not None and set(cycle) == {"workers.a", "workers.b"} and cycle[0] == cycle[-1]
