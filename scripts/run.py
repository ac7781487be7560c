"""``make run``: a worker, the audit trail and the simulator against the stack.

Starts the audit trail (S3, ``python -m streamapp.audit``) and the simulator
(endless, at a steady rate) in the background, prints the URLs to look at,
then runs the worker in the foreground; Ctrl-C stops all three.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamapp.config import settings  # noqa: E402
from streamapp.connections import redact  # noqa: E402


def main() -> int:
    bin_dir = Path(sys.executable).parent
    # Migrations first, as the schema's owner (POSTGRES_MIGRATE_DSN when set).
    if subprocess.run([sys.executable, "-m", "streamapp.migrate"], cwd=ROOT).returncode:
        return 1
    worker = subprocess.Popen([str(bin_dir / "faust"), "-A", "streamapp", "worker", "-l", "info"],
                              cwd=ROOT)
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
  a user               {base}/api/users/u0000001/
  audit search         {base}/api/audit/?event_type=rating.submitted
  Faust stats          {base}/   (and /assignment/, /performance/)
  Prometheus metrics   {base}/metrics
  OpenSearch           {redact(settings.elasticsearch_url)}
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
