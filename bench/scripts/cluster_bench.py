#!/usr/bin/env python3
"""Issue 13 cluster figures: start-to-serving (3 nodes), controller failover,
CreateTopics of 1,000 partitions (1 node and 3 nodes), metadata log bytes per
partition. All nodes on 127.0.0.1, sharing this machine's 2 cores."""
import json, os, shutil, signal, subprocess, sys, tempfile, time

FJORD = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
BASE = 24000

def ports(i, run):
    b = BASE + run * 50 + i * 10
    return b, b + 5, b + 8  # native (+shard ports above), kafka, cluster

def start_cluster(root, run, n=3, shards=1):
    voters = ",".join(f"{i+1}@127.0.0.1:{ports(i, run)[2]}" for i in range(n))
    procs, t0 = [], time.monotonic()
    for i in range(n):
        native, kafka, cluster = ports(i, run)
        d = os.path.join(root, f"node{i+1}")
        os.makedirs(d, exist_ok=True)
        args = [FJORD, "start", "--node-id", str(i + 1), "--data-dir", os.path.join(d, "data"),
                "--listen", f"127.0.0.1:{native}", "--kafka-listen", f"127.0.0.1:{kafka}",
                "--shards", str(shards)]
        if n > 1:
            args += ["--cluster-listen", f"127.0.0.1:{cluster}", "--controller-quorum-voters", voters]
        out = open(os.path.join(d, "out.log"), "w")
        procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL))
    serving = [None] * n
    while any(s is None for s in serving):
        for i in range(n):
            if serving[i] is None and "listening on" in open(os.path.join(root, f"node{i+1}", "out.log")).read():
                serving[i] = time.monotonic() - t0
        if time.monotonic() - t0 > 60:
            raise SystemExit("cluster did not serve")
        time.sleep(0.002)
    return procs, serving

def status(run, i):
    native = ports(i, run)[0]
    out = subprocess.run([FJORD, "cluster", "status", "--json", "-b", f"127.0.0.1:{native}"],
                         capture_output=True, text=True, timeout=10)
    return json.loads(out.stdout) if out.returncode == 0 else None

def create(run, i, name, partitions):
    native = ports(i, run)[0]
    return subprocess.run([FJORD, "topic", "create", name, "-p", str(partitions), "-b", f"127.0.0.1:{native}"],
                          capture_output=True, text=True, timeout=60)

def du(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            if not f.endswith(".spare"):
                total += os.path.getsize(os.path.join(dp, f))
    return total

def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()

results = {"serving_ms": [], "failover_ms": [], "failover_admin_ms": [], "create1000_3n_ms": [],
           "create1000_1n_ms": [], "log_bytes_per_partition_3n": [], "log_bytes_per_partition_1n": []}
for run in range(RUNS):
    root = tempfile.mkdtemp(prefix="fjord-cb-")
    procs, serving = start_cluster(root, run)
    results["serving_ms"].append(round(max(serving) * 1000))
    # Wait for every node unfenced and the offsets topic there.
    st = None
    for _ in range(500):
        st = status(run, 0)
        if st and st["controller"] and all(not n["fenced"] for n in st["nodes"]) and len(st["nodes"]) == 3:
            break
        time.sleep(0.01)
    log_dir = os.path.join(root, "node1", "data", "__cluster_metadata-0")
    before = du(log_dir)
    t = time.monotonic()
    r = create(run, 0, "big", 1000)
    assert r.returncode == 0, r.stderr
    results["create1000_3n_ms"].append(round((time.monotonic() - t) * 1000))
    time.sleep(0.3)
    results["log_bytes_per_partition_3n"].append(round((du(log_dir) - before) / 1000, 1))
    # Failover: kill -9 the controller, time until another node answers as
    # controller, and until CreateTopics through a live node succeeds.
    st = status(run, 0)
    old = st["controller"]
    other = 0 if old != 1 else 1
    procs[old - 1].send_signal(signal.SIGKILL)
    t = time.monotonic()
    new_ctrl = None
    while new_ctrl is None:
        s = status(run, other)
        if s and s["controller"] not in (None, old):
            new_ctrl = time.monotonic() - t
        time.sleep(0.005)
    results["failover_ms"].append(round(new_ctrl * 1000))
    k = 0
    while True:
        r = create(run, other, f"after-{k}", 1)
        k += 1
        if r.returncode == 0:
            break
        time.sleep(0.005)
    results["failover_admin_ms"].append(round((time.monotonic() - t) * 1000))
    stop(procs)
    shutil.rmtree(root)
    # One node.
    root = tempfile.mkdtemp(prefix="fjord-cb1-")
    procs, _ = start_cluster(root, run + RUNS, n=1, shards=2)
    log_dir = os.path.join(root, "node1", "data", "__cluster_metadata-0")
    before = du(log_dir)
    t = time.monotonic()
    r = create(run + RUNS, 0, "big", 1000)
    assert r.returncode == 0, r.stderr
    results["create1000_1n_ms"].append(round((time.monotonic() - t) * 1000))
    time.sleep(0.3)
    results["log_bytes_per_partition_1n"].append(round((du(log_dir) - before) / 1000, 1))
    stop(procs)
    shutil.rmtree(root)
    print(run, {k: v[-1] for k, v in results.items()}, flush=True)

def med(v):
    v = sorted(v); return v[len(v) // 2]
print(json.dumps({k: {"median": med(v), "min": min(v), "max": max(v), "all": v} for k, v in results.items()}, indent=1))
