"""The single profile's Redis: one redis-server with an AOF, and the app's ACL user."""

from __future__ import annotations

import hashlib
import os
import time
import urllib.parse
from pathlib import Path

from servers.common import BIND_HOST, stack_secret, url_port
from servers.install import tool
from servers.process import Server


class Redis(Server):
    """Debian's redis-server with an append-only file, so data survives restarts."""

    name = "redis"

    @property
    def port(self) -> int:
        return url_port("REDIS_URL", "redis://127.0.0.1:6379/0", 6379)

    def install(self) -> None:
        tool("redis-server", "redis-server")

    def command(self) -> list[str]:
        return [tool("redis-server", "redis-server"), "--bind", BIND_HOST, "--port", str(self.port),
                "--dir", str(self.data), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--logfile", ""]

    def signature(self) -> str:
        return "redis-server"  # redis rewrites its cmdline to "redis-server host:port"

    def is_ours(self, pid: int) -> bool:
        """Redis hides its arguments, so also check it runs in our data dir (--dir)."""
        try:
            return super().is_ours(pid) and Path(f"/proc/{pid}/cwd").resolve() == self.data.resolve()
        except OSError:
            return False

    def probe(self) -> str:
        import redis

        client = redis.Redis.from_url(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
                                      socket_timeout=2, socket_connect_timeout=2)
        try:
            started = time.perf_counter()
            client.ping()
            ms = (time.perf_counter() - started) * 1000
            version = client.info("server")["redis_version"]
        finally:
            client.close()
        return f"PING ok, Redis {version}, {ms:.0f} ms"


    # --- the app's ACL user: streamapp's keys and the commands it needs, nothing else

    acl_user = "streamapp"
    #: Reading and writing keys, scripts (EVALSHA, EVAL, SCRIPT LOAD/EXISTS),
    #: MULTI, SELECT; no admin or "dangerous" command (FLUSHALL, FLUSHDB, CONFIG,
    #: KEYS, INFO, DEBUG, SHUTDOWN...), nothing that lists other keys' names
    #: (SCAN, RANDOMKEY), no script or function flushing, no pub/sub.
    acl_commands = ("-@all", "+@read", "+@write", "+@scripting", "+@connection", "+@transaction",
                    "-@dangerous", "+select", "-script|flush", "-script|kill", "-script|debug",
                    "-function", "-scan", "-randomkey")

    @property
    def key_prefix(self) -> str:
        return os.environ.get("REDIS_KEY_PREFIX") or "sa:"

    def after_start(self) -> None:
        """(Re)create the app's ACL user on every start: limited to keys under the prefix."""
        import redis

        digest = hashlib.sha256(stack_secret("redis-app").encode()).hexdigest()
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.key_prefix) + "*"
        client = redis.Redis(host=BIND_HOST, port=self.port, socket_timeout=2)  # the default (admin) user
        try:
            client.execute_command("ACL", "SETUSER", self.acl_user, "reset", "on", f"#{digest}",
                                   f"~{pattern}", "resetchannels", *self.acl_commands)
        finally:
            client.close()

    def secure_env(self) -> dict[str, str]:
        url = urllib.parse.urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
        password = urllib.parse.quote(stack_secret("redis-app"), safe="")
        return {"REDIS_URL": f"redis://{self.acl_user}:{password}@{BIND_HOST}:{self.port}{url.path or '/0'}"}
