"""What every server module shares: where the stack lives, messages, errors, ports."""

from __future__ import annotations

import os
import secrets
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent.parent
STACK = Path(os.environ.get("STACK_DIR") or REPO / ".stack").resolve()
CACHE = STACK / "cache"
DATA = STACK / "data"
LOGS = STACK / "logs"
RUN = STACK / "run"

BIND_HOST = "127.0.0.1"  # a local dev stack: never listen on other interfaces
JVM_HEAP = ["-Xms256m", "-Xmx512m"]
LOG_TAIL_LINES = 40
MAX_LOG_BYTES = 50 * 1024 * 1024  # rotate a service's log once at start beyond this


def say(message: str) -> None:
    print(f"stack: {message}", flush=True)


class StackError(Exception):
    """A failure worth a one-line message rather than a traceback."""


def url_port(env: str, default: str, default_port: int) -> int:
    """The port of the address the app will connect to, from its own env variable."""
    value = os.environ.get(env) or default
    first = value.split(",")[0].strip()
    if "://" not in first:
        first = "tcp://" + first
    return urllib.parse.urlsplit(first).port or default_port


def port_open(port: int, host: str = BIND_HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def stack_secret(name: str) -> str:
    """A password for the local stack, made up once and kept in .stack/secrets/<name> (0600)."""
    path = STACK / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        path.touch(0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def run_cli(main: Callable[[list[str]], int], prog: str) -> None:
    """Exit with ``main``'s status; a StackError is one line on stderr, not a trace."""
    try:
        sys.exit(main(sys.argv[1:]))
    except StackError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
