"""The processes a pass starts (workers, the audit trail) and ``--pin-worker``."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Dict, Optional, Sequence

import psutil

from tests.harness import FAUST_WORKER, Worker, free_port


class Pinning:
    """``--pin-worker``: the process under test on a core of its own.

    In production the worker does not share its machine with Kafka and the
    stores.  Here it does, and each pass's rate depends on how much of a core
    the servers leave it.  With pinning, every pass's worker (the ceiling
    consumer and the pass-through too) runs on the first CPU, and the stack's
    servers, the audit trail and this benchmark on the others; affinity is
    restored at the end.  Off by default: the default run is the shared
    machine, as the targets were set on it.
    """

    SERVERS = ("java", "ferretdb", "secantusd", "mongod", "postgres", "redis-server")

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        self.all = set(cpus)
        self.mine, self.rest = {cpus[0]}, set(cpus[1:]) or {cpus[0]}
        self.pids: set = set()

    def _set(self, pid: int, cpus: set) -> None:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            return
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass
        self.pids.add(pid)

    def stack(self) -> None:
        """The servers and this process (the producers it starts inherit it)."""
        for proc in psutil.process_iter(["name"]):
            if (proc.info.get("name") or "").startswith(self.SERVERS):
                self._set(proc.pid, self.rest)
        self._set(os.getpid(), self.rest)

    def worker(self, pid: int) -> None:
        self._set(pid, self.mine)

    def other(self, pid: int) -> None:
        self._set(pid, self.rest)

    def restore(self) -> None:
        for pid in self.pids:
            self._set(pid, self.all)


#: Set by ``--pin-worker``.
PIN: Optional[Pinning] = None


def pin_stack() -> None:
    """``--pin-worker``: the stack's servers and this process off the worker's core."""
    global PIN
    PIN = Pinning()
    PIN.stack()


def unpin() -> None:
    """Give every pinned process all CPUs again."""
    if PIN is not None:
        PIN.restore()


class Process(Worker):
    """``tests.harness.Worker`` with any command line, a shorter stop (the run
    has a time limit), and SIGINT for the profiled worker.  With
    ``--pin-worker``, a process under test goes to its own core."""

    def __init__(self, env: Dict[str, str], log_path: Path, argv: Sequence[str],
                 port: int, under_test: bool = True) -> None:
        super().__init__(env, log_path, port, argv)
        self.under_test = under_test

    def start(self) -> Process:
        super().start()
        if PIN is not None:
            (PIN.worker if self.under_test else PIN.other)(self.proc.pid)
        return self

    def stop(self, grace: float = 15) -> None:
        super().stop(grace)

    def interrupt_and_wait(self, timeout: float = 60) -> None:
        """SIGINT (what pyinstrument catches to write its report), then wait."""
        self.signal_and_wait(signal.SIGINT, timeout, otherwise=self.stop)


#: Workers started and not yet stopped, by pass name (stopped in ``run``'s finally).
RUNNING: Dict[str, Process] = {}


def stop_worker(name: str) -> None:
    worker = RUNNING.pop(name, None)
    audit = RUNNING.pop(f"{name}-audit", None)
    if audit is not None:
        audit.stop()
    if worker is None:
        return
    if name.endswith("_profiled"):
        worker.interrupt_and_wait()  # pyinstrument writes its report on SIGINT
    else:
        worker.stop()


def start_audit(env: Dict[str, str], work: Path, name: str) -> None:
    """S3 as deployed: its own process (``python -m streamapp.audit``), own group."""
    RUNNING[f"{name}-audit"] = Process(env, work / f"{name}-audit.log",
                                       ["-m", "streamapp.audit"], port=free_port(),
                                       under_test=False).start()


def start_worker(env: Dict[str, str], work: Path, name: str,
                 profile: Optional[Path] = None) -> Process:
    argv = list(FAUST_WORKER)
    if profile is not None:  # a saved session, rendered by ``render_profile``
        argv = ["-m", "pyinstrument", "-r", "pyisession", "-o", str(profile), *argv]
    return Process(env, work / f"{name}.log", argv, port=free_port()).start()
