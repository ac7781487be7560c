#!/usr/bin/env python3
"""Web UIs for the local stack's databases: pgAdmin 4, mongo-express, redis-commander.

    python scripts/tools.py run       install if needed, start, wait, print the URLs; Ctrl-C stops them
    python scripts/tools.py up        the same, detached (stop with `down`)
    python scripts/tools.py down      stop the tools this script started
    python scripts/tools.py status    one HTTP request per tool
    python scripts/tools.py install   install only (pgAdmin from PyPI, the npm packages)
    python scripts/tools.py logs TOOL

TOOL is pgadmin, mongo-express or redis-commander. They open the databases
the app's own variables name (POSTGRES_DSN, MONGODB_URL, REDIS_URL), listen on
127.0.0.1 only and ask for a login: TOOLS_USER / TOOLS_EMAIL (pgAdmin) and
TOOLS_PASSWORD, which, when unset, is made up once and kept in
.stack/tools/secrets/password. Installs and state live in .stack/tools
(``pgadmin-venv/``, ``node_modules/``, ``data/<tool>/``, ``logs/``, ``run/``).
See README, "Database tools".
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Process bookkeeping and installs shared with the service stack (scripts/servers/).
from servers import install as stack_install  # noqa: E402
from servers.common import BIND_HOST, REPO, STACK, StackError, port_open, run_cli  # noqa: E402
from servers.process import Server, proc_cmdline, tail  # noqa: E402

TOOLS = STACK / "tools"           # installs: pgadmin-venv/, node_modules/
NPM_SPEC = REPO / "scripts" / "tools-npm"  # package.json + package-lock.json (pinned)
PGADMIN_VERSION = "9.18"
PYTHON = os.environ.get("PYTHON", "python3.11")

DEFAULT_PORTS = {"pgadmin": 5050, "mongo-express": 8081, "redis-commander": 8082}
PORT_VARS = {"pgadmin": "PGADMIN_PORT", "mongo-express": "MONGO_EXPRESS_PORT",
             "redis-commander": "REDIS_COMMANDER_PORT"}
STATE_VAR = "STREAMAPP_TOOL_STATE"  # in each tool's environment: which start it belongs to
DEFAULT_CONNECTIONS = {
    "POSTGRES_DSN": "postgresql://streamapp@127.0.0.1:5432/streamapp",
    "MONGODB_URL": "mongodb://127.0.0.1:27017/streamapp",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def say(message: str) -> None:
    print(f"tools: {message}", flush=True)


# ------------------------------------------------------------------------ install


def pgadmin_python() -> Path:
    return TOOLS / "pgadmin-venv" / "bin" / "python"


def pgadmin_package() -> Path:
    """The installed ``pgadmin4`` package directory (pgAdmin4.py, setup.py)."""
    found = sorted((TOOLS / "pgadmin-venv" / "lib").glob("python3*/site-packages/pgadmin4"))
    if not found:
        raise StackError("pgAdmin is not installed (python scripts/tools.py install)")
    return found[-1]


def install_pgadmin() -> None:
    """pgadmin4 from PyPI in its own venv (its pinned dependencies clash with the app's)."""
    marker = TOOLS / "pgadmin-venv" / ".installed"
    if marker.exists() and marker.read_text().strip() == PGADMIN_VERSION:
        return
    say(f"installing pgadmin4=={PGADMIN_VERSION} into {TOOLS / 'pgadmin-venv'} (about 30 s)")
    started = time.monotonic()
    python = shutil.which(PYTHON) or sys.executable
    stack_install.run([python, "-m", "venv", "--clear", str(TOOLS / "pgadmin-venv")])
    pip = [str(pgadmin_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    stack_install.run([*pip, "--upgrade", "pip"])
    stack_install.run([*pip, f"pgadmin4=={PGADMIN_VERSION}"])
    marker.write_text(PGADMIN_VERSION + "\n")
    say(f"pgadmin4 installed in {time.monotonic() - started:.0f} s")


def node() -> str:
    return stack_install.tool("node", "nodejs")


def install_npm_tools() -> None:
    """mongo-express and redis-commander with `npm ci` from the committed lockfile."""
    spec = hashlib.sha256((NPM_SPEC / "package-lock.json").read_bytes()).hexdigest()
    marker = TOOLS / "node_modules" / ".streamapp-lock-sha256"
    if marker.exists() and marker.read_text().strip() == spec:
        return
    npm = stack_install.tool("npm", "npm")
    node()
    say(f"installing mongo-express and redis-commander into {TOOLS / 'node_modules'} (npm ci)")
    started = time.monotonic()
    TOOLS.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(NPM_SPEC / name, TOOLS / name)
    # Install scripts stay off: none of these packages needs one (bcrypt is an
    # optional speed-up of redis-commander's password hashing; bcryptjs stands in).
    stack_install.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=TOOLS)
    marker.write_text(spec + "\n")
    say(f"npm packages installed in {time.monotonic() - started:.0f} s")


def install() -> None:
    """Install what is missing; one installer at a time (`make tools` and the test share it)."""
    TOOLS.mkdir(parents=True, exist_ok=True)
    with (TOOLS / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        install_pgadmin()
        install_npm_tools()


# ------------------------------------------------------------------ credentials


def credentials(state: Path) -> dict[str, str]:
    """The tools' login: TOOLS_USER, TOOLS_EMAIL, TOOLS_PASSWORD from the environment.

    With TOOLS_PASSWORD unset, a password is made up once and kept (0600) in
    ``<state>/secrets/password``: nothing secret is in the repository.
    """
    password = os.environ.get("TOOLS_PASSWORD", "")
    if not password:
        path = state / "secrets" / "password"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.parent.chmod(0o700)
            path.touch(0o600)
            path.write_text(secrets.token_urlsafe(18) + "\n")
        password = path.read_text().strip()
    if len(password) < 6:
        raise StackError("TOOLS_PASSWORD must have at least 6 characters (pgAdmin's minimum)")
    return {"user": os.environ.get("TOOLS_USER") or "streamapp",
            "email": os.environ.get("TOOLS_EMAIL") or "streamapp@example.com",
            "password": password}


def connections(env: dict[str, str] | None = None) -> dict[str, str]:
    """The app's connection settings, from ``env`` or the environment."""
    source = os.environ if env is None else env
    return {name: source.get(name) or default for name, default in DEFAULT_CONNECTIONS.items()}


# ------------------------------------------------------------------------ tools


class Tool(Server):
    """One web UI: a process started detached, with its own env, state dir and pid file."""

    start_timeout = 90.0
    stop_timeout = 15.0

    def __init__(self, state: Path, conn: dict[str, str], creds: dict[str, str],
                 port: int | None = None) -> None:
        self.state = state
        self.conn = conn
        self.creds = creds
        self._port = port or int(os.environ.get(PORT_VARS[self.name]) or DEFAULT_PORTS[self.name])

    # paths under the tools' own state dir, not the stack's
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{BIND_HOST}:{self.port}/"

    @property
    def data(self) -> Path:
        return self.state / "data" / self.name

    @property
    def log(self) -> Path:
        return self.state / "logs" / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.state / "run" / f"{self.name}.pid"

    def is_ours(self, pid: int) -> bool:
        """Our program (signature) started for our state dir (a variable in its
        environment: redis-commander changes its working directory)."""
        if not super().is_ours(pid):
            return False
        try:
            return f"{STATE_VAR}={self.data}\0".encode() in Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False

    def environment(self) -> dict[str, str]:
        """Variables for the tool's process (secrets go here, never on the command line)."""
        return {}

    def request(self, path: str, auth: bool = True, timeout: float = 3.0) -> tuple[int, str]:
        req = urllib.request.Request(self.url.rstrip("/") + path)
        if auth:
            token = base64.b64encode(f"{self.creds['user']}:{self.creds['password']}".encode())
            req.add_header("Authorization", "Basic " + token.decode())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def start(self) -> bool:
        if pid := self.pid():
            say(f"{self.name}: already running (pid {pid}) on {self.url}")
            return True
        if port_open(self.port):
            raise StackError(f"{self.name}: port {self.port} is taken; set {PORT_VARS[self.name]}")
        self.prepare()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        say(f"{self.name}: starting on {self.url}")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.data, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **self.environment(), STATE_VAR: str(self.data)})
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.write_text(f"{self.process.pid}\n")
        return True

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        say(f"{self.name}: stopping pid {pid}")
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while proc_cmdline(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc_cmdline(pid) is not None:
            os.killpg(pid, signal.SIGKILL)
            while proc_cmdline(pid) is not None:
                time.sleep(0.1)
        if self.process is not None:
            self.process.wait()
        self.pidfile.unlink(missing_ok=True)


class PgAdmin(Tool):
    """pgAdmin 4 in server mode (a login, as on a shared machine), with the
    app's PostgreSQL pre-registered from a servers.json."""

    name = "pgadmin"

    def config_file(self) -> Path:
        return self.data / "config_streamapp.py"

    def environment(self) -> dict[str, str]:
        return {"CONFIG_DISTRO_FILE_PATH": str(self.config_file()),
                "PGADMIN_SETUP_EMAIL": self.creds["email"],
                "PGADMIN_SETUP_PASSWORD": self.creds["password"],
                "PGSERVICEFILE": str(self.data / "pg_service.conf")}

    def servers_json(self) -> dict:
        dsn = urllib.parse.urlsplit(self.conn["POSTGRES_DSN"])
        database = urllib.parse.unquote(dsn.path.lstrip("/")) or "postgres"
        return {"Servers": {"1": {
            "Name": "streamapp", "Group": "Servers",
            "Host": dsn.hostname or BIND_HOST, "Port": dsn.port or 5432,
            "MaintenanceDB": database, "Username": urllib.parse.unquote(dsn.username or "postgres"),
            # Show only the app's database in the tree.
            "DBRestriction": database,
            # Connect through the service file (PGSERVICEFILE): a password in
            # POSTGRES_DSN goes there (0600), and pgAdmin connects without
            # asking for one (the local stack needs none).
            "Service": "streamapp",
            "ConnectionParameters": {"connect_timeout": 10},
        }}}

    def write_service_file(self) -> None:
        dsn = urllib.parse.urlsplit(self.conn["POSTGRES_DSN"])
        lines = ["[streamapp]", f"host={dsn.hostname or BIND_HOST}", f"port={dsn.port or 5432}",
                 f"dbname={urllib.parse.unquote(dsn.path.lstrip('/')) or 'postgres'}",
                 f"user={urllib.parse.unquote(dsn.username or 'postgres')}"]
        if dsn.password:
            lines.append(f"password={urllib.parse.unquote(dsn.password)}")
        for key, values in urllib.parse.parse_qs(dsn.query).items():  # sslmode, sslrootcert, ...
            lines.append(f"{key}={values[-1]}")
        path = self.data / "pg_service.conf"
        path.touch(0o600)
        path.write_text("\n".join(lines) + "\n")

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        self.write_service_file()
        self.config_file().write_text(
            "# Written by scripts/tools.py on every start.\n"
            "SERVER_MODE = True\n"
            f"DEFAULT_SERVER = {BIND_HOST!r}\n"
            f"DEFAULT_SERVER_PORT = {self.port}\n"
            f"DATA_DIR = {str(self.data)!r}\n"
            "UPGRADE_CHECK_ENABLED = False\n"
            "CONSOLE_LOG_LEVEL = 30\n"
            # The login is the only secret; no second master password prompt.
            "MASTER_PASSWORD_REQUIRED = False\n"
            "ENABLE_PSQL = False\n"
            "SHOW_GRAVATAR_IMAGE = False  # no network: no avatar requests\n")
        env = {**os.environ, **self.environment()}
        setup = [str(pgadmin_python()), str(pgadmin_package() / "setup.py")]
        stack_install.run([*setup, "setup-db"], env=env, cwd=self.data)  # creates the login user once
        # The login may have changed since the first start: update or add it.
        login = hashlib.sha256(f"{self.creds['email']}\0{self.creds['password']}".encode()).hexdigest()
        applied = self.data / "login.sha256"
        if not applied.exists() or applied.read_text().strip() != login:
            result = stack_install.run([*setup, "update-user", self.creds["email"], "--admin", "--password",
                                        self.creds["password"]], env=env, cwd=self.data)
            if "not found" in result.stdout.lower():
                stack_install.run([*setup, "add-user", self.creds["email"], self.creds["password"], "--admin"],
                                  env=env, cwd=self.data)
            applied.write_text(login + "\n")
        servers = self.data / "servers.json"
        servers.write_text(json.dumps(self.servers_json(), indent=2))
        result = stack_install.run([*setup, "load-servers", str(servers), "--user", self.creds["email"],
                                    "--replace"], env=env, cwd=self.data)
        if "error" in result.stdout.lower():
            raise StackError(f"pgadmin: load-servers failed:\n{result.stdout}")

    def command(self) -> list[str]:
        return [str(pgadmin_python()), str(pgadmin_package() / "pgAdmin4.py")]

    def signature(self) -> str:
        return "pgAdmin4.py"

    def probe(self) -> str:
        status, body = self.request("/misc/ping", auth=False)
        if status != 200 or "PING" not in body:
            raise StackError(f"pgadmin: /misc/ping answered {status}")
        return "ping ok"


class MongoExpress(Tool):
    """mongo-express 1.0.0 on the app's MongoDB database (FerretDB locally).

    Without admin mode it connects to the database MONGODB_URL names and shows
    only that one, which keeps it to commands FerretDB has (no serverStatus
    or listDatabases over the whole server).
    """

    name = "mongo-express"

    def database(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.conn["MONGODB_URL"]).path.lstrip("/")) or "test"

    def environment(self) -> dict[str, str]:
        return {
            "ME_CONFIG_MONGODB_URL": self.conn["MONGODB_URL"],
            "ME_CONFIG_MONGODB_ENABLE_ADMIN": "false",
            "ME_CONFIG_BASICAUTH_USERNAME": self.creds["user"],
            "ME_CONFIG_BASICAUTH_PASSWORD": self.creds["password"],
            # Session and cookie secrets: new per start (logins are basic auth anyway).
            "ME_CONFIG_SITE_COOKIESECRET": secrets.token_hex(16),
            "ME_CONFIG_SITE_SESSIONSECRET": secrets.token_hex(16),
            "VCAP_APP_HOST": BIND_HOST,
            "PORT": str(self.port),
            "NODE_ENV": "production",
        }

    def command(self) -> list[str]:
        app = TOOLS / "node_modules" / "mongo-express" / "app.js"
        return [node(), str(app)]

    def signature(self) -> str:
        return "mongo-express/app.js"

    def probe(self) -> str:
        status, body = self.request(f"/db/{urllib.parse.quote(self.database())}/")
        if status != 200:
            raise StackError(f"mongo-express: /db/{self.database()}/ answered {status}")
        return f"database {self.database()}"


class RedisCommander(Tool):
    """redis-commander 0.9.0 on the app's Redis database (REDIS_URL)."""

    name = "redis-commander"

    def connection(self) -> dict:
        url = urllib.parse.urlsplit(self.conn["REDIS_URL"])
        db = url.path.lstrip("/") or "0"
        return {"label": "streamapp", "host": url.hostname or BIND_HOST, "port": url.port or 6379,
                "dbIndex": int(db), "password": urllib.parse.unquote(url.password or ""),
                "username": urllib.parse.unquote(url.username) if url.username else None,
                "tls": url.scheme == "rediss"}

    def environment(self) -> dict[str, str]:
        return {
            # node-config merges this JSON over the package's defaults: the
            # connection (with its password) stays off the command line.
            "NODE_CONFIG": json.dumps({"connections": [self.connection()]}),
            "NODE_ENV": "production",
            "HTTP_USER": self.creds["user"],
            "HTTP_PASSWORD": self.creds["password"],
            "ADDRESS": BIND_HOST,
            "PORT": str(self.port),
        }

    def command(self) -> list[str]:
        app = TOOLS / "node_modules" / "redis-commander" / "bin" / "redis-commander.js"
        # --nosave: never write connections (and their passwords) to a config file.
        return [node(), str(app), "--nosave", "--use-scan"]

    def signature(self) -> str:
        return "redis-commander.js"

    def probe(self) -> str:
        status, body = self.request("/", auth=False)
        if status != 200 or "Redis Commander" not in body:
            raise StackError(f"redis-commander: / answered {status}")
        return "login page"


TOOL_CLASSES = {cls.name: cls for cls in (PgAdmin, MongoExpress, RedisCommander)}


def tools(state: Path = TOOLS, env: dict[str, str] | None = None,
          ports: dict[str, int] | None = None, names: list[str] | None = None) -> list[Tool]:
    creds = credentials(state)
    conn = connections(env)
    return [TOOL_CLASSES[name](state, conn, creds, (ports or {}).get(name))
            for name in (names or TOOL_CLASSES)]


def start_all(selected: list[Tool]) -> None:
    """Start every tool, then wait for each; on a failure stop what was started."""
    try:
        for tool in selected:
            tool.start()
        for tool in selected:
            say(f"{tool.name}: {tool.wait_healthy()}")
    except BaseException:
        stop_all(selected)
        raise


def stop_all(selected: list[Tool]) -> None:
    for tool in selected:
        tool.stop()


def describe(selected: list[Tool]) -> str:
    creds = selected[0].creds if selected else credentials(TOOLS)
    where = ("TOOLS_PASSWORD" if os.environ.get("TOOLS_PASSWORD")
             else f"the password in {TOOLS / 'secrets' / 'password'}")
    lines = []
    for tool in selected:
        login = creds["email"] if tool.name == "pgadmin" else creds["user"]
        lines.append(f"  {tool.name:<16} {tool.url}  (login {login}, {where})")
    return "\n".join(lines)


# -------------------------------------------------------------------------- CLI


def cmd_status(selected: list[Tool]) -> int:
    failed = 0
    for tool in selected:
        try:
            detail = tool.probe()
            print(f"{tool.name:<16} up    {tool.url} ({detail})")
        except Exception as error:
            failed += 1
            print(f"{tool.name:<16} down  {tool.url} ({error})")
    return 1 if failed else 0


def cmd_run(selected: list[Tool], foreground: bool) -> int:
    install()
    start_all(selected)
    say("ready:\n" + describe(selected))
    if not foreground:
        say("stop them with: python scripts/tools.py down")
        return 0
    say("Ctrl-C stops them")

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # `kill` stops them as Ctrl-C does
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    try:
        while True:
            for tool in selected:
                if tool.pid() is None:
                    raise StackError(f"{tool.name} exited; last lines of {tool.log}:\n{tail(tool.log)}")
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop_all(selected)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tools.py", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb in ("run", "up", "down", "status"):
        verbs.add_parser(verb).add_argument("tools", nargs="*", metavar="TOOL",
                                            help=", ".join(TOOL_CLASSES) + " (default: all)")
    verbs.add_parser("install")
    verbs.add_parser("logs").add_argument("tool", choices=list(TOOL_CLASSES))
    args = parser.parse_args(argv)
    unknown = set(getattr(args, "tools", [])) - set(TOOL_CLASSES)
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(sorted(unknown))}; choose from {', '.join(TOOL_CLASSES)}")
    if args.verb == "install":
        install()
        return 0
    if args.verb == "logs":
        log = tools(names=[args.tool])[0].log
        print(tail(log, 100))
        return 0
    selected = tools(names=args.tools or None)
    if args.verb == "status":
        return cmd_status(selected)
    TOOLS.mkdir(parents=True, exist_ok=True)
    with (TOOLS / "tools.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one tools.py at a time starts or stops them
        if args.verb == "down":
            stop_all(selected)
            return 0
        if args.verb == "up":
            return cmd_run(selected, foreground=False)
    return cmd_run(selected, foreground=True)


if __name__ == "__main__":
    run_cli(main, "tools")
