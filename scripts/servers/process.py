"""Process bookkeeping shared by every server: pid files, start, health wait, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from servers.common import BIND_HOST, DATA, LOG_TAIL_LINES, LOGS, MAX_LOG_BYTES, RUN, StackError, port_open, say


def proc_cmdline(pid: int) -> str | None:
    """The command line of a live (non-zombie) process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return None


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return "(no log yet)"
    with path.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 256 * 1024))
        return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")


class Server:
    """One local server: install it, start it detached, check it, stop it.

    Subclasses describe the server (install, prepare, command, probe); this base
    class does the process bookkeeping the same way for all of them.
    """

    name = ""
    start_timeout = 60.0
    stop_timeout = 30.0
    stop_signal = signal.SIGTERM
    run_as: str | None = None  # OS user to run the server as (PostgreSQL refuses root)
    process: subprocess.Popen | None = None  # set when this invocation launched it

    # --- description, per server

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def address(self) -> str:
        return f"{BIND_HOST}:{self.port}"

    def install(self) -> None:
        """Download or build what the server needs; fast no-op when cached."""

    def prepare(self) -> None:
        """Create the data dir and config before each start (idempotent)."""
        self.data.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        """The foreground command line of the server."""
        raise NotImplementedError

    def signature(self) -> str:
        """A string in /proc/<pid>/cmdline that shows the pid is our server."""
        raise NotImplementedError

    def is_ours(self, pid: int) -> bool:
        """Whether a pid from our pid file is still our server (pids get reused)."""
        cmdline = proc_cmdline(pid)
        return cmdline is not None and self.signature() in cmdline

    def probe(self) -> str:
        """A real protocol request; returns a short detail, raises if not answering."""
        raise NotImplementedError

    def healthy(self) -> str:
        """The readiness check used while starting; the status probe by default."""
        try:
            return self.probe()
        except ImportError as missing:  # no client library: fall back to the TCP port
            if port_open(self.port):
                return f"port open ({missing.name} not installed, no protocol check)"
            raise

    def after_start(self) -> None:
        """One-off setup once the server answers (e.g. create a database)."""

    def secure_env(self) -> dict[str, str]:
        """The app's settings for this server's authenticated users, if it has any."""
        return {}

    # --- bookkeeping, shared

    @property
    def data(self) -> Path:
        return DATA / self.name

    @property
    def log(self) -> Path:
        return LOGS / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return RUN / f"{self.name}.pid"

    def pid(self) -> int | None:
        """Pid of the server this script started, if it is still alive."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not self.is_ours(pid):
            self.pidfile.unlink(missing_ok=True)  # stale: the server died
            return None
        return pid

    def answers(self) -> str | None:
        try:
            return self.probe()
        except Exception:
            return None

    def start(self) -> bool:
        """Launch the server detached, unless ours or someone else's is already there.

        Returns False when an outside server answers on the port: we reuse it as is.
        """
        if pid := self.pid():
            say(f"{self.name}: already running (pid {pid})")
            return True
        if port_open(self.port):
            if detail := self.answers():
                say(f"{self.name}: reusing the server already on {self.address} ({detail}); down will not stop it")
                return False
            raise StackError(f"{self.name}: port {self.port} is taken by something that is not {self.name}")
        self.prepare()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.log.exists() and self.log.stat().st_size > MAX_LOG_BYTES:
            self.log.replace(self.log.with_suffix(".log.1"))
        say(f"{self.name}: starting on {self.address}")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.data, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,  # outlives this script
                user=self.run_as, group=self.run_as, extra_groups=[] if self.run_as else None,
            )
        RUN.mkdir(parents=True, exist_ok=True)
        self.pidfile.write_text(f"{self.process.pid}\n")
        return True

    def wait_healthy(self) -> str:
        """Poll healthy() until it passes; on timeout or crash show the log and fail."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                detail = self.healthy()
                self.after_start()
                return detail
            except Exception as error:
                last_error = error
            if self.process is not None and self.process.poll() is not None:
                problem = f"exited with code {self.process.returncode}"
                break
            if time.monotonic() > deadline:
                problem = f"not healthy after {self.start_timeout:.0f} s ({last_error})"
                break
            time.sleep(0.5)
        if self.process is not None:
            self.stop()
        raise StackError(f"{self.name}: {problem}; last lines of {self.log}:\n{tail(self.log)}")

    def stop(self) -> None:
        """Stop the server we started: polite signal, then SIGKILL after a timeout."""
        pid = self.pid()
        if pid is None:
            if port_open(self.port):
                say(f"{self.name}: not started by this script; leaving {self.address} alone")
            return
        say(f"{self.name}: stopping pid {pid}")
        os.kill(pid, self.stop_signal)
        deadline = time.monotonic() + self.stop_timeout
        while proc_cmdline(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc_cmdline(pid) is not None:
            say(f"{self.name}: still alive after {self.stop_timeout:.0f} s, killing")
            os.killpg(pid, signal.SIGKILL)
            while proc_cmdline(pid) is not None:
                time.sleep(0.1)
        self.pidfile.unlink(missing_ok=True)
