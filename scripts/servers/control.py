"""Node control for fault tests: kill -9, polite stop, start and wait for the cluster."""

from __future__ import annotations

import os
import signal
import time

from servers.common import StackError, say
from servers.kafka_cluster import KafkaNode, wait_kafka_cluster
from servers.process import Server, proc_cmdline
from servers.profiles import node
from servers.redis_cluster import RedisNode, wait_redis_cluster


def kill_node(name: str) -> None:
    """kill -9 a server this script started, and wait until it is gone."""
    server = node(name)
    pid = server.pid()
    if pid is None:
        raise StackError(f"{name}: not running (or not started by this script)")
    say(f"{name}: kill -9 pid {pid}")
    os.killpg(pid, signal.SIGKILL)
    if server.process is not None and server.process.pid == pid:
        server.process.wait()  # started from this process: reap it
    while proc_cmdline(pid) is not None:
        time.sleep(0.05)
    server.pidfile.unlink(missing_ok=True)


def stop_node(name: str) -> None:
    """Stop one server politely (SIGKILL after its stop timeout)."""
    node(name).stop()


def start_node(name: str, wait: bool = True) -> None:
    """Start one server; with wait, until it is healthy and its cluster is whole again."""
    server = node(name)
    server.install()
    server.start()
    if not wait:
        return
    say(f"{name}: healthy ({server.wait_healthy()})")
    if isinstance(server, RedisNode):
        wait_redis_cluster()
    elif isinstance(server, KafkaNode):
        wait_kafka_cluster()


def stop_parallel(servers: list[Server]) -> None:
    """Stop servers at the same time; each is SIGKILLed after its own stop timeout."""
    if not servers:
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(servers)) as pool:
        for future in [pool.submit(server.stop) for server in servers]:
            future.result()
