"""API_KEYS_REQUIRED: auto (the default), true and false, in-process against a real database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from api.keys import create_key, revoke_key
from shared.settings import Settings
from tools.localfarm import ROOT, migrate

REMOTE = {"REMOTE_ADDR": "203.0.113.7"}  # a client on another machine


def _status(client, path: str = "/saved_voices", key: str | None = None, remote: bool = False) -> int:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return int(client.get(path, headers=headers, environ_base=REMOTE if remote else {}).status_code)


def test_auto_serves_only_local_clients_until_a_key_exists_then_requires_keys(app_with) -> None:
    client = app_with()  # API_KEYS_REQUIRED unset: auto
    assert _status(client) == 200  # `make run` on localhost, no key
    refused = client.get("/saved_voices", environ_base=REMOTE)
    assert refused.status_code == 401 and "python -m api.keys create" in refused.get_json()["error"]["message"]
    assert _status(client, "/health", remote=True) == 503  # public: no worker here, said to anyone, no 401
    assert _status(client, "/health/api", remote=True) == 200
    assert client.get("/health", environ_base=REMOTE).get_json()["workers"] is None  # no details for strangers

    key, _ = create_key("first")
    assert _status(client) == 401  # from now on, local clients need a key too
    assert _status(client, key=key) == 200 and _status(client, key=key, remote=True) == 200
    assert revoke_key("first")
    assert _status(client) == 401 and _status(client, key=key) == 401  # revoking the last key locks, never opens


def test_true_requires_keys_even_of_local_clients(app_with) -> None:
    client = app_with(API_KEYS_REQUIRED=True)
    assert _status(client) == 401
    assert _status(client, "/health") == 503 and _status(client, "/health/api") == 200  # public, no worker here
    assert _status(client, "/openapi/openapi.json") == 200


def test_false_serves_everyone_as_the_operator(app_with) -> None:
    client = app_with(API_KEYS_REQUIRED=False)
    assert _status(client, remote=True) == 200
    health = client.get("/health", environ_base=REMOTE).get_json()
    assert health["workers"] == [] and health["requests"]["limit"] == Settings().MAX_CONCURRENT_REQUESTS


def test_the_documented_key_command_writes_the_key_and_nothing_on_stderr(tmp_path: Path) -> None:
    """`python -m api.keys create` as README.md and docs/security.md show it: the key on stdout, and no warning
    (importing the `api` package once ran the app's imports, api.keys among them, and runpy warned about it)."""
    database_url = f"sqlite:///{tmp_path / 'keys.db'}"
    migrate(database_url)
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    for command in (["create", "--name", "alice", "--admin"], ["list"]):
        done = subprocess.run(
            [sys.executable, "-m", "api.keys", *command], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        assert (done.returncode, done.stderr) == (0, ""), command
        assert "alice" in done.stdout
