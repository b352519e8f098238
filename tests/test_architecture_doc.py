"""docs/architecture.md stays true: every function, class, method, SQL column, Celery task name, Redis key, setting,
endpoint, thread name and file it names in backticks exists in the code.

Read from the source with `ast`, never imported: fast, and no model stack to load for the workers' modules.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from tools.localfarm import ROOT

DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("api", "workers", "shared", "voices_store", "tools", "celery_config")
CODE_LAYERS = ("api", "workers", "shared", "voices_store", "celery_config.py", "gunicorn.conf.py")

BACKTICKED = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(rf"^(?:{'|'.join(PACKAGES)})(?:\.\w+)+$")
CLASS_ATTRIBUTE = re.compile(r"^([A-Z]\w*)\.(\w+)$")  # `Job.state`, `BatchScheduler.lock`
TASK_NAME = re.compile(r"^xtts\.\w+$")
REDIS_KEY = re.compile(r"^xtts:[\w:{}*-]+$")
PLACEHOLDER = re.compile(r"\{\w*\}|\*")
FILE_PATH = re.compile(r"^[\w./-]+(?:/|\.py|\.md|\.ini|\.toml|\.yml)$")
SETTING = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")  # `SEGMENT_LEASE_SECONDS`
ENDPOINT = re.compile(r"^(GET|POST|PUT|DELETE) (/[\w/{}.-]*)$")  # `POST /tts_stream`
THREAD_NAME = re.compile(r"^[a-z]+(?:-[a-z]+)+$")  # `batch-scheduler`
ROUTE = re.compile(r"<\w+>|\{\w+\}")


def backticked(text: str) -> list[str]:
    return BACKTICKED.findall(text)


# --- names in the code ----------------------------------------------------------------------------------------------
def _names_in(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Functions, classes and assigned names (annotated ones included) of a module or class body."""
    found: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        found[name.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
    return found


def _members(cls: ast.ClassDef) -> dict[str, ast.AST]:
    """A class's own names, and the attributes its methods set on `self` (`self.lock = ...`)."""
    found = _names_in(cls.body)
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for attribute in ast.walk(target):
                if (
                    isinstance(attribute, ast.Attribute)
                    and isinstance(attribute.value, ast.Name)
                    and attribute.value.id == "self"
                ):
                    found.setdefault(attribute.attr, node)
    return found


@cache
def _module(dotted: str, root: Path = ROOT) -> ast.Module | None:
    base = root.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return ast.parse(path.read_text(), str(path))
    return None


def resolve(reference: str, root: Path = ROOT) -> str | None:
    """None when `module.name`, `module.Class.method` (any depth) exists; else what is missing."""
    parts = reference.split(".")
    for split in range(len(parts), 0, -1):
        module = _module(".".join(parts[:split]), root)
        if module is not None:
            break
    else:
        return f"no module {parts[0]}"
    scope: dict[str, ast.AST] = _names_in(module.body)
    for depth, name in enumerate(parts[split:], start=split):
        node = scope.get(name)
        if node is None:
            return f"{'.'.join(parts[:depth])} has no {name}"
        scope = _members(node) if isinstance(node, ast.ClassDef) else {}
    return None


@cache
def _project_classes(root: Path = ROOT) -> dict[str, list[ast.ClassDef]]:
    classes: dict[str, list[ast.ClassDef]] = {}
    for layer in CODE_LAYERS:
        for path in _code_files(layer, root):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    classes.setdefault(node.name, []).append(node)
    return classes


def resolve_class_attribute(reference: str, root: Path = ROOT) -> str | None:
    """`Class.attribute`, for a class of the project that has it (e.g. a SQL column, `Job.state`)."""
    match = CLASS_ATTRIBUTE.match(reference)
    assert match
    cls, attribute = match.groups()
    candidates = _project_classes(root).get(cls)
    if not candidates:
        return f"no class {cls} in the project"
    if not any(attribute in _members(c) for c in candidates):
        return f"class {cls} has no {attribute}"
    return None


# --- strings in the code -------------------------------------------------------------------------------------------
def _code_files(layer: str, root: Path) -> list[Path]:
    path = root / layer
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


@cache
def _code_strings(root: Path = ROOT) -> frozenset[str]:
    """Every string constant of the production code (f-strings' literal parts included)."""
    strings: set[str] = set()
    for layer in CODE_LAYERS:
        for path in _code_files(layer, root):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    strings.add(node.value)
    return frozenset(strings)


def redis_key_missing(pattern: str, root: Path = ROOT) -> str | None:
    """A key pattern (`xtts:job:{id}:seg:{k}`) is in the code when each of its literal pieces is part of a string
    of the code (`f"xtts:job:{job_id}:seg:{index}"`, `PREFIX = "xtts:worker:"`)."""
    pieces = [p for p in PLACEHOLDER.split(pattern) if p]
    strings = _code_strings(root)
    missing = [p for p in pieces if not any(p in s for s in strings)]
    return f"{pattern}: no string of the code holds {missing}" if missing else None


def setting_missing(name: str, root: Path = ROOT) -> str | None:
    """A setting of `shared.settings.Settings`, or a constant of the code (`SEND_GRACE_SECONDS`)."""
    settings = _module("shared.settings", root)
    assert settings is not None
    fields = next(_members(n) for n in settings.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    if name in fields:
        return None
    constants = {n for layer in CODE_LAYERS for path in _code_files(layer, root) for n in _module_names(path)}
    return None if name in constants else "neither a setting nor a constant of the code"


@cache
def _module_names(path: Path) -> frozenset[str]:
    return frozenset(_names_in(ast.parse(path.read_text(), str(path)).body))


@cache
def _routes(root: Path = ROOT) -> frozenset[tuple[str, str]]:
    """(METHOD, path with `{}` for each parameter) of every `@bp.<method>("<path>")` route of the API."""
    found = set()
    for path in _code_files("api/routes", root):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                first = node.args[0]
                if node.func.attr in ("get", "post", "put", "delete") and isinstance(first, ast.Constant):
                    found.add((node.func.attr.upper(), ROUTE.sub("{}", str(first.value))))
    return frozenset(found)


def endpoint_missing(item: str, root: Path = ROOT) -> str | None:
    match = ENDPOINT.match(item)
    assert match
    method, path = match.group(1), ROUTE.sub("{}", match.group(2))
    return None if (method, path) in _routes(root) else "no such route in api/routes/"


# --- the doc ----------------------------------------------------------------------------------------------------------
def problems(text: str, root: Path = ROOT) -> list[str]:
    found = []
    for item in dict.fromkeys(backticked(text)):
        if DOTTED.match(item):
            why = resolve(item, root)
        elif CLASS_ATTRIBUTE.match(item):
            why = resolve_class_attribute(item, root)
        elif TASK_NAME.match(item):
            why = None if item in _code_strings(root) else "no such task name"
        elif REDIS_KEY.match(item):
            why = redis_key_missing(item, root)
        elif SETTING.match(item):
            why = setting_missing(item, root)
        elif ENDPOINT.match(item):
            why = endpoint_missing(item, root)
        elif THREAD_NAME.match(item):
            why = None if item in _code_strings(root) else "no such name (of a thread) in the code"
        elif FILE_PATH.match(item) and ("/" in item or item.endswith(".py")):
            why = None if (root / item).exists() else "no such file"
        else:
            continue
        if why:
            found.append(f"`{item}`: {why}")
    return found


def test_every_name_the_architecture_doc_gives_exists() -> None:
    assert problems(DOC.read_text()) == []


def test_the_doc_names_enough_to_be_checked() -> None:
    """The check is not vacuous: the doc names the hops, the columns and the keys it is meant to."""
    items = backticked(DOC.read_text())
    assert sum(bool(DOTTED.match(i)) for i in items) > 100
    assert sum(bool(CLASS_ATTRIBUTE.match(i)) for i in items) > 20
    assert sum(bool(REDIS_KEY.match(i)) for i in items) > 10


@pytest.mark.parametrize(
    ("wrong", "why"),
    [
        ("`shared.jobs.claim_next_segmentt`", "shared.jobs has no claim_next_segmentt"),
        ("`workers.scheduler.BatchScheduler.runn`", "workers.scheduler.BatchScheduler has no runn"),
        ("`shared.nothing.here`", "shared has no nothing"),
        ("`JobSegment.lease_holder`", "class JobSegment has no lease_holder"),
        ("`xtts.synthesise_segment`", "no such task name"),
        ("`xtts:jobs:{id}:seg:{k}`", "no string of the code holds ['xtts:jobs:']"),
        ("`workers/runtimes.py`", "no such file"),
        ("`SEGMENT_LEASE_SECOND`", "neither a setting nor a constant"),
        ("`DELETE /jobs/{id}/stream`", "no such route"),
        ("`heart-beat`", "no such name"),
    ],
)
def test_a_wrong_name_is_reported(wrong: str, why: str) -> None:
    found = problems(f"A hop: {wrong}.")
    assert len(found) == 1 and why in found[0], found


def test_right_names_of_each_kind_pass() -> None:
    text = (
        "`shared.jobs.claim_next_segment` `workers.scheduler.BatchScheduler.lock` `shared.jobs.Refused.ENDED` "
        "`api.lifecycle.lifecycle` `celery_config.celery_config` `Job.segments_dispatched` "
        "`xtts.synthesize_segment` `xtts:job:{id}:seg:{k}:owner` `xtts:worker:{name}` `workers/runtime.py` "
        "`migrations/` "
        "`SEGMENT_LEASE_SECONDS` `SEND_GRACE_SECONDS` `GET /jobs/{id}/stream` `POST /tts_stream` `batch-scheduler`"
    )
    assert problems(text) == []
