"""The test setup leaves the machine as it found it: a throwaway PostgreSQL cluster when no server can be used,
and never an edit of the system's PostgreSQL files."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import psycopg

from tools.localfarm import ROOT, PostgresCluster, postgres_answers


def _files_under(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_throwaway_cluster_serves_the_tests_then_leaves_nothing() -> None:
    cluster = PostgresCluster().start()
    try:
        assert postgres_answers(cluster.admin_url)
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE made_by_a_test")
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    finally:
        cluster.cleanup()
    assert not cluster.dir.exists()
    assert not postgres_answers(cluster.admin_url)


def test_the_test_setup_edits_no_system_postgresql_file() -> None:
    script = (ROOT / "scripts" / "test_env.sh").read_text()
    assert "pg_hba" not in script and "/etc/" not in script
    before = _files_under(Path("/etc/postgresql"))
    subprocess.run(["scripts/test_env.sh"], cwd=ROOT, check=True, capture_output=True)
    assert _files_under(Path("/etc/postgresql")) == before
