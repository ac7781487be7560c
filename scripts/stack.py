#!/usr/bin/env python3
"""Run streamapp's backing services locally, without Docker.

    python scripts/stack.py up [SERVICE...]     install if needed, start, wait until healthy
    python scripts/stack.py down [SERVICE...]   stop what this script started (data is kept)
    python scripts/stack.py status              one protocol-level check per service
    python scripts/stack.py logs SERVICE [-f]   show (or follow) a service's log
    python scripts/stack.py install [SERVICE...] download/build only
    python scripts/stack.py wipe                stop everything and delete data and logs
    python scripts/stack.py kill SERVICE...     kill -9 (fault tests)
    python scripts/stack.py env [--export]      the app's connection settings, NAME=value
    python scripts/stack.py redis-master KEY    the Redis Cluster node that is master for KEY

Services: kafka, postgres, mongodb, redis, opensearch. Everything lives under
``.stack/`` at the repo root (override with STACK_DIR): ``cache/`` for downloads
and builds, ``data/<service>/``, ``logs/<service>.log`` and ``run/<service>.pid``.
Ports come from the same environment variables the app reads. See docs/stack.md.

STACK_PROFILE=cluster (or --profile cluster) selects the cluster profile:
kafka-1..3 (KRaft, ports 19092-19094) and redis-7001..7006 (a Redis Cluster)
beside the same postgres, mongodb and opensearch; there "kafka" and "redis"
name all nodes of that kind. Node names work in either profile.

This file is the command line, and ``import stack`` (with scripts/ on sys.path)
the Python API of docs/stack.md for fault tests. The servers themselves live in
the ``servers`` package next to it, one module per server.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import os
import shutil
import sys
from pathlib import Path

from servers.common import CACHE, DATA, LOGS, REPO, RUN, STACK, StackError, port_open, run_cli, say
from servers.control import kill_node, start_node, stop_node, stop_parallel
from servers.kafka_cluster import KafkaNode, kafka_leaders, kafka_nodes, kafka_under_replicated, wait_kafka_cluster
from servers.profiles import (
    CLUSTER_NODES,
    PROFILES,
    SERVERS,
    SHARED_SERVICES,
    current_profile,
    node,
    own_servers,
    profile_env,
    profile_servers,
    selected,
    shared_in_use_by_other,
    write_secure_env,
)
from servers.redis_cluster import (
    REDIS_NODES,
    RedisNode,
    cluster_nodes,
    create_redis_cluster_if_new,
    redis_key_slot,
    redis_master_for_key,
    redis_master_for_slot,
    redis_nodes,
    wait_redis_cluster,
)

#: The Python API for fault tests (docs/stack.md).
__all__ = [
    "StackError", "cluster_nodes", "kafka_leaders", "kafka_nodes", "kafka_under_replicated", "kill_node",
    "node", "port_open", "profile_env", "redis_key_slot", "redis_master_for_key", "redis_master_for_slot",
    "redis_nodes", "start_node", "stop_node", "wait_kafka_cluster", "wait_redis_cluster",
]


def cmd_install(names: list[str], profile: str) -> int:
    for server in selected(names, profile):
        server.install()
    say("installed")
    return 0


def cmd_up(names: list[str], profile: str) -> int:
    """Install, launch every server, then wait for each (JVMs start in parallel)."""
    servers = selected(names, profile)
    for server in servers:
        server.install()
    ours, failures = [], 0
    for server in servers:
        try:
            if server.start():
                ours.append(server)
        except StackError as error:
            print(f"stack: {error}", file=sys.stderr)
            failures += 1
    for server in ours:
        try:
            say(f"{server.name}: healthy on {server.address} ({server.wait_healthy()})")
        except StackError as error:
            print(f"stack: {error}", file=sys.stderr)
            failures += 1
    if failures:
        return 1
    try:
        if any(isinstance(s, RedisNode) for s in servers):
            if all(port_open(n.port) for n in REDIS_NODES):
                create_redis_cluster_if_new()
            say(f"redis cluster: {wait_redis_cluster()}")
        if any(isinstance(s, KafkaNode) for s in servers):
            say(f"kafka cluster: {wait_kafka_cluster()}")
    except StackError as error:
        print(f"stack: {error}", file=sys.stderr)
        return 1
    if profile == "single":
        write_secure_env()
    return 0


def cmd_down(names: list[str], profile: str) -> int:
    """Stop the servers; cluster nodes in parallel with a bounded wait, the rest in reverse order.

    A whole-profile down leaves the shared stores running while the other
    profile's own servers still run.
    """
    servers = selected(names, profile)
    if not names and (others := shared_in_use_by_other(profile)):
        say(f"leaving {', '.join(SHARED_SERVICES)} running: the other profile's {', '.join(others)} still run")
        servers = [s for s in servers if s.name not in SHARED_SERVICES]
    stop_parallel([s for s in servers if s.name in CLUSTER_NODES])
    for server in reversed(servers):
        if server.name not in CLUSTER_NODES:
            server.stop()
    return 0


def cmd_status(profile: str) -> int:
    all_up = True
    for server in profile_servers(profile).values():
        try:
            detail, state = server.probe(), "up"
        except Exception as error:
            detail, state, all_up = (str(error).splitlines() or [type(error).__name__])[0][:100], "down", False
        pid = server.pid()
        owner = f"pid {pid}" if pid else ("external" if state == "up" else "-")
        print(f"{server.name:<11} {server.address:<16} {state:<5} {owner:<10} {detail}")
    return 0 if all_up else 1


def cmd_wipe(profile: str) -> int:
    """Stop the profile and delete data and logs (the cache stays).

    While the other profile still runs, only this profile's own servers' data
    and logs go; the shared stores (and the other profile) are kept.
    """
    cmd_down([], profile)
    if others := shared_in_use_by_other(profile):
        for server in own_servers(profile):
            shutil.rmtree(server.data, ignore_errors=True)
            server.log.unlink(missing_ok=True)
            server.pidfile.unlink(missing_ok=True)
        if profile == "cluster":
            (DATA / "kafka-cluster.id").unlink(missing_ok=True)
        say(f"wiped the {profile} profile's own servers; kept the shared stores ({', '.join(others)} run)")
        return 0
    for path in (DATA, LOGS, RUN):
        shutil.rmtree(path, ignore_errors=True)
    say(f"wiped data and logs under {STACK} (kept {CACHE})")
    return 0


def cmd_kill(names: list[str], profile: str) -> int:
    """kill -9, for fault tests: the server gets no chance to clean up."""
    for server in selected(names, profile):
        kill_node(server.name)
    return 0


def cmd_env(profile: str, export: bool) -> int:
    import shlex

    for name, value in profile_env(profile).items():
        print(f"export {name}={shlex.quote(value)}" if export else f"{name}={value}")
    return 0


def cmd_logs(name: str, follow: bool) -> int:
    log = node(name).log
    if not log.exists():
        raise StackError(f"no log yet at {log}")
    os.execvp("tail", ["tail", "-n", "100", *(["-F"] if follow else []), str(log)])


def use_project_venv() -> None:
    """Re-run under the project's .venv so status can use the app's client libraries."""
    venv = REPO / ".venv"
    python = venv / "bin" / "python"
    if python.exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(python, [str(python), __file__, *sys.argv[1:]])


ALL_NAMES = list(dict.fromkeys([*SERVERS, *CLUSTER_NODES]))


def service_name(value: str) -> str:
    if value not in ALL_NAMES:
        raise argparse.ArgumentTypeError(f"unknown service {value!r} (choose from {', '.join(ALL_NAMES)})")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    # --profile goes before or after the verb: `stack.py --profile cluster up` or `stack.py up --profile cluster`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", choices=PROFILES, default=argparse.SUPPRESS,
                        help="single (default) or cluster; default from STACK_PROFILE")
    parser = argparse.ArgumentParser(prog="stack.py", description=__doc__.split("\n")[0], parents=[common])
    verbs = parser.add_subparsers(dest="verb", required=True)
    add_verb = functools.partial(verbs.add_parser, parents=[common])
    names_help = (f"{', '.join(SERVERS)}; cluster nodes {', '.join(CLUSTER_NODES)} "
                  "(in the cluster profile kafka and redis mean all nodes of that kind)")
    for verb, help_text in [("up", "install if needed, start and wait until healthy"),
                            ("down", "stop servers this script started; keep data"),
                            ("install", "download and build only")]:
        add_verb(verb, help=help_text).add_argument(
            "services", nargs="*", metavar="SERVICE", type=service_name, help=names_help)
    add_verb("kill", help="kill -9 servers this script started (fault tests)").add_argument(
        "services", nargs="+", metavar="SERVICE", type=service_name, help=names_help)
    add_verb("status", help="check every server with a real protocol request")
    add_verb("wipe", help="stop everything, delete data and logs, keep the cache")
    env = add_verb("env", help="print the app's connection settings for the profile")
    env.add_argument("--export", action="store_true", help="as shell-quoted export lines")
    master = add_verb("redis-master", help="print the Redis Cluster node that is master for a key")
    master.add_argument("key")
    logs = add_verb("logs", help="show the end of a server's log")
    logs.add_argument("service", choices=ALL_NAMES)
    logs.add_argument("-f", "--follow", action="store_true", help="keep following the log")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    profile = getattr(args, "profile", None) or current_profile()
    if args.verb == "logs":
        return cmd_logs(args.service, args.follow)
    if args.verb == "env":
        return cmd_env(profile, args.export)
    use_project_venv()
    if args.verb == "status":
        return cmd_status(profile)
    if args.verb == "redis-master":
        print(redis_master_for_key(args.key).name)
        return 0
    STACK.mkdir(parents=True, exist_ok=True)
    with (STACK / "stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one stack.py at a time changes the stack
        if args.verb == "wipe":
            return cmd_wipe(profile)
        verb = {"up": cmd_up, "down": cmd_down, "install": cmd_install, "kill": cmd_kill}[args.verb]
        return verb(args.services, profile)


if __name__ == "__main__":
    run_cli(main, "stack")
