"""``make run``: workers, the audit trail and the simulator against the stack.

Starts ``WORKERS`` workers (1 by default; ``make run WORKERS=3``), each with
its own web port (``WEB_PORT``, ``WEB_PORT+1`` ...) and table directory, the
audit trail (S3, ``python -m streamapp.audit``) and the simulator (endless,
at a steady rate), prints the URLs to look at, and waits; Ctrl-C stops them
all.  Every worker answers every view for the whole deployment.

The views with personal data need a bearer token (``API_TOKENS``).  When
it is not set, a random token is made for this run only, given to the
workers and printed with the URLs.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamapp.allocator import with_jemalloc  # noqa: E402
from streamapp.config import settings  # noqa: E402
from streamapp.connections import redact  # noqa: E402


def start_worker(index: int, env: dict) -> subprocess.Popen:
    """Worker ``index``: the first keeps the configured port and data dir."""
    env = with_jemalloc(env)  # flat memory (streamapp/allocator.py)
    if index:
        env["WEB_PORT"] = str(settings.web_port + index)
        env["STREAMAPP_DATA_DIR"] = f"{settings.data_dir}-{index}"
    faust = Path(sys.executable).parent / "faust"
    return subprocess.Popen([str(faust), "-A", "streamapp", "worker", "-l", "info"],
                            cwd=ROOT, env=env)


def main() -> int:
    count = int(os.environ.get("WORKERS") or 1)
    if count < 1 or count > settings.topic_partitions:
        print(f"WORKERS must be 1..{settings.topic_partitions} (TOPIC_PARTITIONS)", file=sys.stderr)
        return 2
    # Migrations first, as the schema's owner (POSTGRES_MIGRATE_DSN when set).
    if subprocess.run([sys.executable, "-m", "streamapp.migrate"], cwd=ROOT).returncode:
        return 1
    if settings.api_tokens:
        token, token_note = "<one of your API_TOKENS>", "from API_TOKENS"
        worker_env = dict(os.environ)
    else:
        token = secrets.token_urlsafe(32)
        token_note = "made for this run (set API_TOKENS to choose your own)"
        worker_env = {**os.environ, "API_TOKENS": token}
    workers = [start_worker(0, worker_env)]
    time.sleep(5)  # let the first worker declare topics and join its group
    workers += [start_worker(i, worker_env) for i in range(1, count)]
    audit = subprocess.Popen([sys.executable, "-m", "streamapp.audit"], cwd=ROOT,
                             env={**os.environ, "AUDIT_IN_WORKER": "false"})
    simulator = subprocess.Popen([sys.executable, "-m", "streamapp.simulator", "--count", "0",
                                  "--quiet"], cwd=ROOT)
    base = f"http://{settings.web_host}:{settings.web_port}"
    others = "".join(f"\n  worker {i + 1}             http://{settings.web_host}:"
                     f"{settings.web_port + i}/" for i in range(1, count))
    print(f"""
streamapp is running ({count} worker{"s" if count > 1 else ""}).
  dashboard            {base}/dashboard/
  health               {base}/api/health/
  leaderboards         {base}/api/leaderboards/?board=rated
  a title              {base}/api/titles/m00000/
  Faust stats          {base}/   (and /assignment/, /performance/)
  Prometheus metrics   {base}/metrics{others}
  OpenSearch           {redact(settings.elasticsearch_url)}
Any worker answers for the whole deployment.
Personal data needs the API token, {token_note}:
  API token            {token}
  a user               curl -H 'Authorization: Bearer {token}' {base}/api/users/u0000001/
  audit search         curl -H 'Authorization: Bearer {token}' '{base}/api/audit/?event_type=rating.submitted'
  audit explorer       {base}/audit/   (paste the token into the page)
Ctrl-C stops the workers, the audit trail and the simulator; `make services-down` stops the servers.
""", flush=True)
    children = [simulator, audit, *workers]
    try:
        while all(w.poll() is None for w in workers):
            time.sleep(1)
        return next(w.returncode for w in workers if w.poll() is not None)
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in children:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
