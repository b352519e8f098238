"""A farm on several hosts of its own: network namespaces on a bridge the harness creates, each host with its own
address and no loopback or files shared with the others (the model directory is copied to each worker host).

    services  10.X.Y.1   Redis, PostgreSQL and the API
    wa, wb    10.X.Y.2/3  a worker each
    (this process reaches them from the bridge, 10.X.Y.254)

Needs root (`ip netns`, `ip link`). Every name carries a random tag, and `NetHosts.cleanup` deletes the namespaces and
the bridge (with them the veth pairs), also after a failed test. Traffic goes to these hosts only.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tools.localfarm import Farm, PostgresCluster, RedisServer, create_postgres_database, migrate

SERVICES, WORKER_HOSTS = "services", ("wa", "wb")


def _routed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every network the machine routes to (its default route aside): the bridge's must overlap none."""
    routes = subprocess.run(["ip", "-o", "route"], check=True, capture_output=True, text=True).stdout
    return [
        ipaddress.ip_network(line.split()[0], strict=False)
        for line in routes.splitlines()
        if line.split() and line.split()[0] != "default"
    ]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str
    veth: str  # the bridge's end of its link: down cuts the host off

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace)


class NetHosts:
    def __init__(self, names: tuple[str, ...] = (SERVICES, *WORKER_HOSTS)) -> None:
        tag = secrets.token_hex(3)
        self.bridge = f"xb{tag}"
        # A /24 in 10.200-254/16 that the machine does not route already.
        routed = _routed_networks()
        subnet = next(
            net
            for net in (
                ipaddress.ip_network(f"10.{200 + secrets.randbelow(55)}.{secrets.randbelow(256)}.0/24")
                for _ in range(50)
            )
            if not any(net.overlaps(other) for other in routed)
        )
        self.subnet = str(subnet)
        hosts = list(subnet.hosts())
        self.gateway = str(hosts[-1])  # this process's address on the bridge
        self.hosts: dict[str, Host] = {}
        self._made: list[tuple[str, ...]] = []  # how to undo each step, last first
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._made.append(("link", "del", self.bridge))
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(names):
                self._add(Host(name, f"xn{tag}{name}", str(hosts[i]), f"xv{tag}{name}"[:15]))
        except BaseException:
            self.cleanup()
            raise

    def _add(self, host: Host) -> None:
        _ip("netns", "add", host.namespace)
        self._made.append(("netns", "del", host.namespace))
        peer = f"xp{host.veth[2:]}"[:15]
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
        self._made.append(("link", "del", host.veth))  # gone with its namespace too; this covers a half-made one
        _ip("link", "set", peer, "netns", host.namespace)
        _ip("link", "set", host.veth, "master", self.bridge)
        _ip("link", "set", host.veth, "up")
        _ip("netns", "exec", host.namespace, "ip", "addr", "add", f"{host.address}/24", "dev", peer)
        _ip("netns", "exec", host.namespace, "ip", "link", "set", peer, "up")
        _ip("netns", "exec", host.namespace, "ip", "link", "set", "lo", "up")
        self.hosts[host.name] = host

    def cut(self, name: str) -> None:
        """The host's link down: it can reach nothing, and nothing reaches it (its processes live on)."""
        _ip("link", "set", self.hosts[name].veth, "down")

    def restore(self, name: str) -> None:
        _ip("link", "set", self.hosts[name].veth, "up")

    def cleanup(self) -> None:
        for step in reversed(self._made):
            subprocess.run(["ip", *step], check=False, capture_output=True)
        self._made.clear()


class NetFarm(Farm):
    """The API on the services host, worker wN on worker host N (each with its own model copy and folders)."""

    def __init__(self, net: NetHosts, root: Path, model_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        services = net.hosts[SERVICES]
        self.net = net
        # Redis serves other hosts only with a password (its protected mode), as any deployment would have one.
        self.redis_server = RedisServer(host=services.address, prefix=services.prefix, password=secrets.token_hex(8))
        self.postgres = PostgresCluster(host=services.address, prefix=services.prefix, network=net.subnet)
        try:
            self.redis_server.start()
            self.postgres.start()
        except BaseException:  # nothing left running when the services could not be made
            self.postgres.cleanup()
            self.redis_server.cleanup()
            raise
        database_url = create_postgres_database(self.postgres.admin_url)
        migrate(database_url)
        self.hosts_of = {f"w{i + 1}": net.hosts[name] for i, name in enumerate(WORKER_HOSTS)}
        self.host_dirs = {}
        for worker, host in self.hosts_of.items():
            folder = root / host.name
            shutil.copytree(model_dir, folder / "models", symlinks=False)  # no file shared between hosts
            self.host_dirs[worker] = folder
        # Keys off: the test's clients are on another host of a private bridge (in `auto`, a farm without keys
        # serves only its own machine).
        extra_env = {"API_KEYS_REQUIRED": "false", **(extra_env or {})}
        super().__init__(
            redis_url=self.redis_server.url,
            database_url=database_url,
            model_dir=root / "unused",
            workers=len(WORKER_HOSTS),
            log_dir=root,
            extra_env=extra_env,
            api_host=services.address,
        )

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        if name == "api":
            host = self.net.hosts[SERVICES]
            env = {**env, "VOICES_DIR": str(self.log_dir / SERVICES / "voices")}
        else:
            host, folder = self.hosts_of[name], self.host_dirs[name]
            env = {**env, "MODEL_DIR": str(folder / "models"), "VOICES_DIR": str(folder / "voices")}
        return super()._spawn(name, [*host.prefix, *args], env)

    def cleanup(self) -> None:
        self.stop()
        self.postgres.cleanup()
        self.redis_server.cleanup()
