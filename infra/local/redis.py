"""A Redis server from Debian's ``redis-server`` on loopback, with an optional password.

Given :class:`~infra.local.tls.LocalCertificates` it listens with TLS only (``--tls-port``,
``--port 0``): clients connect to ``rediss://`` and trust the local CA (client certificates
are not required).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from infra.local.process import ManagedProcess, ServiceError
from infra.local.tls import LocalCertificates


def redis_server_binary() -> str:
    """Path of ``redis-server``, installing Debian's package when it is missing and we are root."""
    found = shutil.which("redis-server")
    if found:
        return found
    import os

    if os.geteuid() != 0:
        raise ServiceError("redis-server is not installed; run `sudo apt-get install -y redis-server`")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"`{' '.join(cmd)}` failed:\n{result.stderr[-2000:]}")
    found = shutil.which("redis-server")
    if not found:
        raise ServiceError("apt-get installed redis-server but it is not on PATH")
    return found


class RedisServer:
    """Redis with data under ``<home>/redis`` and log ``<home>/logs/redis.log``."""

    def __init__(self, home: Path, port: int, password: str | None = None,
                 tls: LocalCertificates | None = None) -> None:
        self.home = home
        self.port = port
        self.password = password
        self.tls = tls
        self.data_dir = home / "redis" / f"data-{port}"
        self.process = ManagedProcess("redis", home, ports=(port,),
                                      # redis-server rewrites its title to "redis-server 127.0.0.1:PORT"
                                      markers=(str(self.data_dir), f"127.0.0.1:{port}"))

    @property
    def url(self) -> str:
        """``redis://`` (``rediss://`` with TLS) URL for clients (without the password)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float) -> int:
        """Start unless running and wait until it answers PING."""
        if self.process.pid() is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            argv = [redis_server_binary()]
            if self.password:
                # In a 0600 file rather than on the command line, where `ps` would show it.
                conf = self.data_dir / "auth.conf"
                conf.write_text(f"requirepass {self.password}\n")
                conf.chmod(0o600)
                argv.append(str(conf))
            argv += [
                "--bind", "127.0.0.1", *self._port_arguments(),
                "--dir", str(self.data_dir), "--daemonize", "no", "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec",
            ]
            self.process.start(argv)
        self.process.wait_healthy(self.healthy, timeout_s)
        return self.process.pid() or 0

    def _port_arguments(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no",
            "--tls-cert-file", str(self.tls.server_cert), "--tls-key-file", str(self.tls.server_key),
            "--tls-ca-cert-file", str(self.tls.ca_file),
        ]

    def healthy(self) -> bool:
        """True when the server answers PING (with AUTH when a password is set)."""
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls.ca_file)} if self.tls else {}
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1, **tls)
        try:
            return bool(client.ping())
        finally:
            client.close()
