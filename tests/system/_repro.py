import asyncio, json, sys, time, subprocess, urllib.request
sys.path.insert(0, "tests")
from harness import isolated_env, reset_stores
from tests.system.cluster_chaos import Fleet
from tests.system.chaos import start_simulator
async def main(run):
    env = isolated_env(database="streamapp_test_cluster", cluster=True); env["TABLE_STORE"]="rocksdb://"
    await reset_stores(env)
    f = Fleet(env, f"repro{run}"); f.start(0, 1)
    sim, path = start_simulator(env, f"repro{run}", "--count", "4000", "--rate", "400", "--seed", "41")
    time.sleep(4); f.kill(1)
    sim.wait()
    last, same = None, 0
    for i in range(30):
        time.sleep(5)
        try:
            h = json.load(urllib.request.urlopen(f"http://127.0.0.1:6191/api/health/", timeout=10))
        except Exception as e:
            print("health failed", e); continue
        lag = {t.split(".")[-1]: {p: v["lag"] for p, v in d["partitions"].items() if v["lag"]} for t, d in h["consumer"]["topics"].items()}
        lag = {t: v for t, v in lag.items() if v}
        print(run, i*5, lag, flush=True)
        if not lag: break
        same = same + 1 if lag == last else 0
        last = lag
        if same >= 4:
            print("STUCK", run, f.workers[0].log_path, flush=True)
            print(subprocess.run([".venv/bin/py-spy", "dump", "--pid", str(f.workers[0].proc.pid), "--native"], capture_output=True, text=True).stdout[-15000:])
            break
    f.stop_all()
for run in range(3):
    asyncio.run(main(run))
