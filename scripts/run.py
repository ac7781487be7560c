"""``make run``: a worker, the audit trail and the simulator against the stack.

Starts the audit trail (S3, ``python -m streamapp.audit``) and the simulator
(endless, at a steady rate) in the background, prints the URLs to look at,
then runs the worker in the foreground; Ctrl-C stops all three.

The views with personal data need a bearer token (``API_TOKENS``).  When
it is not set, a random token is made for this run only, given to the
worker and printed with the URLs.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamapp.config import settings  # noqa: E402


def without_password(url: str) -> str:
    """``url`` with any password in it replaced by ``***``, for printing."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def main() -> int:
    bin_dir = Path(sys.executable).parent
    if settings.api_tokens:
        token, token_note = "<one of your API_TOKENS>", "from API_TOKENS"
        worker_env = dict(os.environ)
    else:
        token = secrets.token_urlsafe(32)
        token_note = "made for this run (set API_TOKENS to choose your own)"
        worker_env = {**os.environ, "API_TOKENS": token}
    worker = subprocess.Popen([str(bin_dir / "faust"), "-A", "streamapp", "worker", "-l", "info"],
                              cwd=ROOT, env=worker_env)
    time.sleep(5)  # let the worker declare topics and join its group first
    audit = subprocess.Popen([sys.executable, "-m", "streamapp.audit"], cwd=ROOT,
                             env={**os.environ, "AUDIT_IN_WORKER": "false"})
    simulator = subprocess.Popen([sys.executable, "-m", "streamapp.simulator", "--count", "0",
                                  "--quiet"], cwd=ROOT)
    base = f"http://{settings.web_host}:{settings.web_port}"
    print(f"""
streamapp is running.
  dashboard            {base}/dashboard/
  health               {base}/api/health/
  leaderboards         {base}/api/leaderboards/?board=rated
  a title              {base}/api/titles/m00000/
  Faust stats          {base}/   (and /assignment/, /performance/)
  Prometheus metrics   {base}/metrics
  OpenSearch           {without_password(settings.elasticsearch_url)}
Personal data needs the API token, {token_note}:
  API token            {token}
  a user               curl -H 'Authorization: Bearer {token}' {base}/api/users/u0000001/
  audit search         curl -H 'Authorization: Bearer {token}' '{base}/api/audit/?event_type=rating.submitted'
Ctrl-C stops the worker, the audit trail and the simulator; `make services-down` stops the servers.
""", flush=True)
    try:
        return worker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (simulator, audit, worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (simulator, audit, worker):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
