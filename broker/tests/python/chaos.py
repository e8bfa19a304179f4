#!/usr/bin/env python3
"""Nemesis harness on real processes (issue 15): three `fjord` nodes, each
in its own network namespace, under faults scheduled from a seed, with
confluent-kafka clients recording every acknowledgement and every read,
and chaos_checker.py over their histories. Run by broker/tests/chaos.rs
(a short run and the fault self-test) and scripts/chaos (long runs).

    python3 chaos.py run --fjord BIN [--seconds N] [--seed S]
        [--report PATH] [--keep-dir DIR] [--per-second R] [--overlap K]
    python3 chaos.py selftest

Needs root and `ip netns`. Everything it creates is named after its pid
and removed at exit (also on an exception, SIGINT or SIGTERM); what a
killed run left behind (namespaces, host links, mounts, node processes of
a pid that no longer runs) is removed by the next run before it starts.

Topology (all created here):
  * namespace fjc<pid>-n<i> per node i, its service address 10.A.B.i/32
    on its `lo`; the nodes listen there (native :9192, Kafka :9092,
    cluster :9093) and advertise it;
  * a veth pair per node pair (`p<j>` in node i's namespace, `p<i>` in
    node j's), with a /32 route to the peer's service address over it:
    node-to-node traffic goes over that link only;
  * a veth pair per node to the root namespace (`fjc<pid>h<i>` there,
    `r` in the node's), the clients' address 10.A.B.100/32 on the root
    side: the clients (in the root namespace) reach every node directly
    and are never cut off by the nemesis;
  * the data dir of each node on its own loop-mounted ext4 image.
No forwarding is involved (every route is to a directly linked peer).

Faults (one at a time, each healed before the next, or with --overlap K
up to K at once, each healing after its own hold; kinds drawn in rounds,
each round a seeded shuffle of all kinds; see Nemesis):
  isolate-leader, isolate-controller, isolate-node (majority/minority
  split): every node-node link of the node down (`ip link set down` on
  both ends);
  cut-link: one node-node link down (the third node still sees both);
  one-way: a blackhole route in one namespace only (i to j dropped, j to
  i still delivered), one peer or both;
  kill: SIGKILL, restart at heal; pause: SIGSTOP, SIGCONT at heal;
  disk-full: a filler file takes every free block of the node's
  filesystem, deleted at heal.
Healing a link sets both ends up and puts the /32 routes back (a link
going down drops the routes over it). Overlapping faults count per link
and per direction: a link comes up, a blackholed route comes back, when
the last fault holding it heals; process and disk faults never share a
node.
"""

import argparse
import ctypes
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import chaos_checker  # noqa: E402

CLIENTS = os.path.join(HERE, "replication_clients.py")
NODES = 3
NATIVE_PORT = 9192
KAFKA_PORT = 9092
CLUSTER_PORT = 9093
PROBE_PORT = 7777
PREFIX = "fjc"
NS_RE = re.compile(r"^fjc(\d+)-n\d+$")
LINK_RE = re.compile(r"^fjc(\d+)h\d+$")
MOUNT_RE = re.compile(r"/fjord-chaos-(\d+)-")
LOCK = "/run/fjord-chaos.lock"
# Bound of one wait for the cluster (ready, ISR full, a client to exit).
WAIT_SECONDS = 180
# Node settings: quick heartbeats and fencing, a dead follower leaves the
# ISR after 2 s (as broker/tests/replication.rs); segments zero-filled
# only 32 KiB ahead of the writer, so a full disk bites within seconds
# (a partition at a few KiB/s needs new blocks every few seconds).
NODE_ENV = {
    "FJORD_LOG_PREPARE_STEP_BYTES": "16384",
    "FJORD_LOG_PREPARE_AHEAD_BYTES": "32768",
    "FJORD_BROKER_HEARTBEAT_INTERVAL_MS": "200",
    "FJORD_BROKER_SESSION_TIMEOUT_MS": "1500",
    "FJORD_REPLICA_LAG_TIME_MAX_MS": "2000",
}
FAULT_KINDS = (
    "isolate-leader",
    "isolate-controller",
    "isolate-node",
    "cut-link",
    "one-way",
    "kill",
    "pause",
    "disk-full",
)


class HarnessError(Exception):
    """The harness could not do its part (not a finding about the broker)."""


def log(message):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    print(f"[{stamp}] {message}", flush=True)


def sh(*args, check=True, timeout=30):
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise HarnessError(f"{' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
    return out


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def die_with_parent():
    """preexec_fn: the child gets SIGKILL when the harness dies (kept
    across `ip netns exec`'s exec), so a killed harness leaves no node."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def clean_stale():
    """Removes what runs of a pid that no longer runs left behind."""
    for line in sh("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NS_RE.match(name)
        if m and not pid_alive(int(m.group(1))):
            log(f"removing namespace {name} of a dead run")
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
    for line in sh("ip", "-o", "link", "show").stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            m = LINK_RE.match(name)
            if m and not pid_alive(int(m.group(1))):
                sh("ip", "link", "del", name, check=False)
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for mount in mounts:
        m = MOUNT_RE.search(mount)
        if m and not pid_alive(int(m.group(1))):
            log(f"unmounting {mount} of a dead run")
            sh("umount", "-l", mount, check=False)


class Topology:
    """The namespaces and links of one run (see the module doc)."""

    def __init__(self, n=NODES):
        self.n = n
        pid = os.getpid()
        self.ns = {i: f"{PREFIX}{pid}-n{i}" for i in range(1, n + 1)}
        self.host = {i: f"{PREFIX}{pid}h{i}" for i in range(1, n + 1)}
        self.net = None
        # With overlapping faults two may hold the same link down (an
        # isolation and a link cut) or the same direction blackholed: a
        # link comes up, a route comes back, when the last fault on it
        # heals. Keys: (low, high) pairs for links, (from, to) for routes.
        self.cuts = {}
        self.blackholes = {}

    def addr(self, i):
        return f"{self.net}.{i}"

    @property
    def client(self):
        return f"{self.net}.100"

    def pairs(self):
        return [(i, j) for i in range(1, self.n + 1) for j in range(i + 1, self.n + 1)]

    def _pick_net(self):
        """A 10.A.B.0/24 no address or route of the root namespace uses."""
        used = sh("ip", "-o", "addr").stdout + sh("ip", "route").stdout
        pid = os.getpid()
        for a in range(200, 255):
            net = f"10.{a}.{pid % 256}"
            if f"{net}." not in used:
                return net
        raise HarnessError("no free 10.A.B.0/24 for the run")

    def create(self):
        import fcntl

        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.net = self._pick_net()
            for i, ns in self.ns.items():
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "-n", ns, "addr", "add", f"{self.addr(i)}/32", "dev", "lo")
                # The clients' link.
                sh("ip", "link", "add", self.host[i], "type", "veth", "peer", "name", "r", "netns", ns)
                sh("ip", "link", "set", self.host[i], "up")
                sh("ip", "-n", ns, "link", "set", "r", "up")
                sh("ip", "addr", "add", f"{self.client}/32", "dev", self.host[i])
                sh("ip", "route", "add", f"{self.addr(i)}/32", "dev", self.host[i], "src", self.client)
                sh("ip", "-n", ns, "route", "add", f"{self.client}/32", "dev", "r", "src", self.addr(i))
            for i, j in self.pairs():
                sh("ip", "-n", self.ns[i], "link", "add", f"p{j}", "type", "veth",
                   "peer", "name", f"p{i}", "netns", self.ns[j])
                self.heal_link(i, j)
        log(f"topology: namespaces {list(self.ns.values())}, nodes at {self.net}.1-{self.n}, "
            f"clients at {self.client}")

    def _route(self, i, j):
        sh("ip", "-n", self.ns[i], "route", "replace", f"{self.addr(j)}/32", "dev", f"p{j}",
           "src", self.addr(i))

    def cut_link(self, i, j):
        key = (min(i, j), max(i, j))
        self.cuts[key] = self.cuts.get(key, 0) + 1
        sh("ip", "-n", self.ns[i], "link", "set", f"p{j}", "down")
        sh("ip", "-n", self.ns[j], "link", "set", f"p{i}", "down")

    def heal_link(self, i, j):
        key = (min(i, j), max(i, j))
        self.cuts[key] = max(0, self.cuts.get(key, 0) - 1)
        if self.cuts[key]:
            return
        sh("ip", "-n", self.ns[i], "link", "set", f"p{j}", "up")
        sh("ip", "-n", self.ns[j], "link", "set", f"p{i}", "up")
        for a, b in ((i, j), (j, i)):
            if not self.blackholes.get((a, b)):
                self._route(a, b)

    def one_way(self, i, j):
        """i can no longer send to j; j still reaches i."""
        self.blackholes[(i, j)] = self.blackholes.get((i, j), 0) + 1
        sh("ip", "-n", self.ns[i], "route", "replace", "blackhole", f"{self.addr(j)}/32")

    def heal_one_way(self, i, j):
        self.blackholes[(i, j)] = max(0, self.blackholes.get((i, j), 0) - 1)
        # A link still cut gets its route back when it comes up.
        if not self.blackholes[(i, j)] and not self.cuts.get((min(i, j), max(i, j))):
            self._route(i, j)

    def heal_all(self):
        self.cuts.clear()
        self.blackholes.clear()
        for i, j in self.pairs():
            self.heal_link(i, j)

    def destroy(self):
        for ns in self.ns.values():
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        for link in self.host.values():
            sh("ip", "link", "del", link, check=False)

    def exec(self, i, *args):
        return ["ip", "netns", "exec", self.ns[i], *args]


class Node:
    """One fjord process in its namespace, its data dir on its own ext4."""

    def __init__(self, topo, i, root, fjord, image_mb):
        self.topo, self.id, self.fjord = topo, i, fjord
        self.dir = os.path.join(root, f"node{i}")
        self.data = os.path.join(self.dir, "data")
        self.image = os.path.join(self.dir, "data.img")
        self.filler = os.path.join(self.data, "filler")
        self.log_path = os.path.join(self.dir, "fjord.log")
        self.proc = None
        self.paused = False
        self.expected_exit = False
        os.makedirs(self.data)
        with open(self.image, "wb") as f:
            f.truncate(image_mb << 20)
        sh("mkfs.ext4", "-q", "-F", "-m", "0", self.image, timeout=120)
        sh("mount", "-o", "loop", self.image, self.data)

    @property
    def addr(self):
        return self.topo.addr(self.id)

    def start(self):
        voters = ",".join(f"{i}@{self.topo.addr(i)}:{CLUSTER_PORT}" for i in self.topo.ns)
        env = dict(os.environ, **NODE_ENV)
        env["FJORD_LOG"] = os.environ.get("FJORD_TEST_LOG", "info")
        command = self.topo.exec(
            self.id, self.fjord, "start",
            "--node-id", str(self.id),
            "--data-dir", self.data,
            "--listen", f"{self.addr}:{NATIVE_PORT}",
            "--kafka-listen", f"{self.addr}:{KAFKA_PORT}",
            "--cluster-listen", f"{self.addr}:{CLUSTER_PORT}",
            "--controller-quorum-voters", voters,
            "--shards", "1",
        )
        log_file = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file,
            env=env, preexec_fn=die_with_parent,
        )
        log_file.close()
        self.paused = False
        self.expected_exit = False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        self.expected_exit = True
        self.proc.kill()
        self.proc.wait()
        self.paused = False

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def fill_disk(self):
        """Takes every free block with a filler file; returns its size."""
        fd = os.open(self.filler, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            st = os.statvfs(self.data)
            size = st.f_bavail * st.f_frsize
            offset = 0
            while size >= 4096:
                try:
                    os.posix_fallocate(fd, offset, size)
                    offset += size
                except OSError:
                    size //= 2
            return offset
        finally:
            os.close(fd)

    def free_disk(self):
        try:
            os.unlink(self.filler)
        except FileNotFoundError:
            pass

    def log_counts(self):
        """Lines of this node's log (all its processes) per kind of event
        the faults cause: evidence that each fault bit."""
        patterns = {
            "disk full": re.compile(r"disk full", re.I),
            "writes resumed": re.compile(r"writes resumed", re.I),
            "new metadata leader": re.compile(r"metadata quorum: new leader"),
            "metadata log write failed": re.compile(r"metadata log cannot be written"),
            "metadata log reopened": re.compile(r"metadata log opened again"),
            "node unreachable": re.compile(r"node unreachable"),
            "panicked": re.compile(r"panicked"),
            "ERROR": re.compile(r"ERROR"),
            "WARN": re.compile(r"WARN"),
        }
        counts = dict.fromkeys(patterns, 0)
        try:
            with open(self.log_path, errors="replace") as f:
                for line in f:
                    for name, pattern in patterns.items():
                        if pattern.search(line):
                            counts[name] += 1
        except OSError:
            pass
        return counts

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop_and_unmount(self):
        if self.running():
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        sh("umount", self.data, check=False)
        try:
            os.unlink(self.image)
        except FileNotFoundError:
            pass


def probe_tcp(topo, src, dst_addr, port, timeout=2.0):
    """True when a TCP connect from node `src`'s namespace (None: the root
    namespace) to dst_addr:port succeeds within timeout."""
    code = (
        "import socket,sys\n"
        f"s=socket.socket(); s.settimeout({timeout})\n"
        f"sys.exit(0 if s.connect_ex(('{dst_addr}',{port}))==0 else 1)\n"
    )
    command = ["python3", "-c", code]
    if src is not None:
        command = topo.exec(src, *command)
    return subprocess.run(command, capture_output=True, timeout=timeout + 10).returncode == 0


class Cluster:
    """The nodes, the topic and what the harness asks of them."""

    def __init__(self, topo, root, fjord, image_mb, partitions):
        self.topo = topo
        self.fjord = fjord
        self.partitions = partitions
        self.topic = "chaos"
        self.nodes = {i: Node(topo, i, root, fjord, image_mb) for i in topo.ns}

    @property
    def bootstrap(self):
        return ",".join(f"{self.topo.addr(i)}:{KAFKA_PORT}" for i in self.nodes)

    def status(self):
        """`fjord cluster status --json` asked of the running nodes, or None."""
        brokers = ",".join(
            f"{n.addr}:{NATIVE_PORT}" for n in self.nodes.values() if n.running() and not n.paused
        )
        if not brokers:
            return None
        try:
            out = sh(self.fjord, "cluster", "status", "--json", "--brokers", brokers,
                     check=False, timeout=15)
        except subprocess.TimeoutExpired:
            return None
        if out.returncode != 0:
            return None
        try:
            return json.loads(out.stdout)
        except ValueError:
            return None

    def controller(self):
        status = self.status()
        c = status.get("controller") if status else None
        return c if isinstance(c, int) and c in self.nodes else None

    def not_ready(self, seconds=WAIT_SECONDS):
        """Waits (bounded) until a controller is active and every node is
        registered and unfenced; returns (nodes still not unfenced, last
        status): empty when ready."""
        end = time.monotonic() + seconds
        status = None
        while True:
            status = self.status()
            missing = sorted(self.nodes)
            if status and status.get("controller") in self.nodes:
                missing = [i for i in self.nodes
                           if not any(n["node"] == i and not n["fenced"] for n in status["nodes"])]
                if not missing:
                    return [], status
            if time.monotonic() >= end:
                return missing, status
            time.sleep(0.5)

    def wait_ready(self):
        missing, status = self.not_ready()
        if missing:
            raise HarnessError(f"cluster not ready within {WAIT_SECONDS}s (nodes {missing}); "
                               f"last status {status}\n" + self.logs())
        return status

    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 5000})

    def create_topic(self):
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        topic = NewTopic(self.topic, self.partitions, 3, config={"min.insync.replicas": "2"})
        end = time.monotonic() + WAIT_SECONDS
        while True:
            try:
                admin.create_topics([topic])[self.topic].result(timeout=30)
                return
            except Exception as error:  # retried while the cluster settles
                if "TOPIC_ALREADY_EXISTS" in str(error):
                    return
                if time.monotonic() >= end:
                    raise HarnessError(f"create topic: {error}")
                time.sleep(1)

    def metadata(self):
        try:
            md = self.admin().list_topics(self.topic, timeout=5)
            return md.topics[self.topic].partitions
        except Exception:
            return None

    def leader(self, partition):
        parts = self.metadata()
        if parts and partition in parts and parts[partition].leader in self.nodes:
            return parts[partition].leader
        return None

    def wait_isr_full(self):
        end = time.monotonic() + WAIT_SECONDS
        parts = None
        while time.monotonic() < end:
            parts = self.metadata()
            if parts and len(parts) == self.partitions and all(
                len(p.isrs) == 3 and p.leader in self.nodes for p in parts.values()
            ):
                return True
            time.sleep(1)
        log(f"ISR not full within {WAIT_SECONDS}s: "
            f"{ {k: (v.leader, v.isrs) for k, v in (parts or {}).items()} }")
        return False

    def logs(self):
        return "".join(
            f"\n--- node {i} log (tail) ---\n{n.log_tail()}" for i, n in self.nodes.items()
        )


class Nemesis:
    """Random faults from a seed, every one healed: one at a time, or with
    `overlap` > 1 up to that many at once (a new fault starts after each
    gap while fewer are active; process and disk faults never share a
    node). The log (`self.faults`) has each fault's kind, target, start and
    heal time (seconds since the run started) and what it did."""

    def __init__(self, cluster, seed, kinds, hold, gap, overlap=1):
        self.cluster = cluster
        self.topo = cluster.topo
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.hold = hold
        self.gap = gap
        self.overlap = overlap
        self.faults = []
        self.crashes = []
        self.round = []
        # Nodes under a kill, pause or full disk now (overlapping runs).
        self.node_busy = set()
        self.started = time.monotonic()

    def now(self):
        return round(time.monotonic() - self.started, 3)

    def others(self, i):
        return [j for j in self.cluster.nodes if j != i]

    def isolate(self, i):
        for j in self.others(i):
            self.topo.cut_link(i, j)
        return lambda: [self.topo.heal_link(i, j) for j in self.others(i)]

    def inject(self, kind):
        """Applies one fault; returns (target, detail, heal)."""
        nodes = sorted(self.cluster.nodes)
        rng = self.rng
        if kind == "isolate-leader":
            partition = rng.randrange(self.cluster.partitions)
            leader = self.cluster.leader(partition)
            target = leader if leader is not None else rng.choice(nodes)
            detail = f"leader of partition {partition}" if leader else "leader unknown: random node"
            return target, detail, self.isolate(target)
        if kind == "isolate-controller":
            controller = self.cluster.controller()
            target = controller if controller is not None else rng.choice(nodes)
            detail = "active controller" if controller else "controller unknown: random node"
            return target, detail, self.isolate(target)
        if kind == "isolate-node":
            target = rng.choice(nodes)
            return target, f"minority [{target}] / majority {self.others(target)}", self.isolate(target)
        if kind == "cut-link":
            i, j = rng.sample(nodes, 2)
            self.topo.cut_link(i, j)
            return [i, j], f"link {i}-{j} down", lambda: self.topo.heal_link(i, j)
        if kind == "one-way":
            i = rng.choice(nodes)
            dsts = self.others(i) if rng.random() < 0.5 else [rng.choice(self.others(i))]
            for j in dsts:
                self.topo.one_way(i, j)
            return i, f"{i} -> {dsts} dropped, {dsts} -> {i} delivered", \
                lambda: [self.topo.heal_one_way(i, j) for j in dsts]
        free = [n for n in nodes if n not in self.node_busy]
        if not free:
            return None
        node_id = rng.choice(free)
        node = self.cluster.nodes[node_id]
        self.node_busy.add(node_id)

        def healed(heal):
            def run():
                heal()
                self.node_busy.discard(node_id)
            return run

        if kind == "kill":
            node.kill()
            return node_id, "SIGKILL, restart at heal", healed(node.start)
        if kind == "pause":
            node.pause()
            return node_id, "SIGSTOP, SIGCONT at heal", healed(node.resume)
        if kind == "disk-full":
            size = node.fill_disk()
            return node_id, f"filler of {size >> 20} MiB", healed(node.free_disk)
        raise HarnessError(f"unknown fault {kind}")

    def check_crashes(self):
        """A node that exited without being killed is a finding: recorded,
        restarted."""
        for i, node in self.cluster.nodes.items():
            if node.proc is not None and not node.running() and not node.expected_exit:
                code = node.proc.returncode
                log(f"node {i} exited by itself with {code}; restarting\n{node.log_tail()}")
                self.crashes.append({"node": i, "t": self.now(), "exit": code,
                                     "log_tail": node.log_tail(60)})
                node.start()

    def next_kind(self):
        """Kinds in rounds: each round a seeded shuffle of every kind, so a
        run of N rounds injects each kind N times, in random order."""
        if not self.round:
            self.round = list(self.kinds)
            self.rng.shuffle(self.round)
        return self.round.pop()

    def start(self, kind, hold):
        """Injects `kind`; returns (fault, heal), or None when no node is
        free for a process or disk fault."""
        start = self.now()
        injected = self.inject(kind)
        if injected is None:
            return None
        target, detail, heal = injected
        log(f"fault {len(self.faults)}: {kind} on {target}: {detail} (for {hold:.1f}s)")
        fault = {"kind": kind, "target": target, "detail": detail, "start": start}
        self.faults.append(fault)
        return fault, heal

    def heal(self, fault, heal):
        heal()
        fault["heal"] = self.now()
        log(f"healed {fault['kind']} on {fault['target']}")

    def run(self, seconds):
        if self.overlap > 1:
            return self.run_overlapping(seconds)
        end = self.started + seconds
        while time.monotonic() < end:
            self.check_crashes()
            kind = self.next_kind()
            hold = self.rng.uniform(*self.hold)
            fault, heal = self.start(kind, hold)
            time.sleep(hold)
            self.heal(fault, heal)
            self.check_crashes()
            time.sleep(self.rng.uniform(*self.gap))

    def run_overlapping(self, seconds):
        """Up to `overlap` faults at once: after each gap a new one starts
        if fewer are active; each heals after its own hold, so they
        overlap in every order. All are healed when the time is up."""
        end = self.started + seconds
        active = []  # (heal at, fault, heal)
        next_start = time.monotonic()
        while time.monotonic() < end or active:
            now = time.monotonic()
            for item in [a for a in active if a[0] <= now]:
                active.remove(item)
                self.heal(item[1], item[2])
            self.check_crashes()
            if now >= next_start and now < end and len(active) < self.overlap:
                kind = self.next_kind()
                hold = self.rng.uniform(*self.hold)
                started = self.start(kind, hold)
                if started is not None:
                    fault, heal = started
                    active.append((time.monotonic() + hold, fault, heal))
                next_start = time.monotonic() + self.rng.uniform(*self.gap)
            if time.monotonic() >= end:
                # Time is up: heal what is left now, newest last.
                for _, fault, heal in sorted(active, key=lambda a: a[0]):
                    self.heal(fault, heal)
                active.clear()
                break
            time.sleep(0.1)


def client(cluster, command, out, run_dir, stop, extra=(), run_seconds_max=3600):
    args = ["python3", CLIENTS, command, cluster.bootstrap, "--topic", cluster.topic,
            "--partitions", str(cluster.partitions), "--out", out,
            "--run-seconds-max", str(run_seconds_max), *extra]
    if stop:
        args += ["--stop-file", stop]
    output = open(os.path.join(run_dir, f"{os.path.basename(out)}.stdout"), "w")
    # librdkafka's idempotence log (epoch bumps, sequence errors, drains:
    # a few lines per fault) in the client's output, kept with a failed
    # run's histories: what tells a client resend from a broker bug.
    env = dict(os.environ)
    env.setdefault("REPLICATION_CLIENTS_DEBUG", "eos")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                            preexec_fn=die_with_parent, env=env)
    output.close()
    return proc


def wait_exit(proc, seconds, what):
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise HarnessError(f"{what} still running after {seconds}s, killed")


def acked_lines(path):
    try:
        return sum(1 for line in open(path) if '"e": null' in line)
    except OSError:
        return 0


def run(args):
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    log(f"chaos run: seed {args.seed}, {args.seconds}s of faults, kinds {args.kinds}, "
        f"up to {args.overlap} at once")
    clean_stale()
    run_dir = tempfile.mkdtemp(prefix=f"fjord-chaos-{os.getpid()}-")
    topo = Topology()
    cluster = None
    procs = []
    result = None
    report = {"seed": args.seed, "seconds": args.seconds, "kinds": args.kinds,
              "overlap": args.overlap,
              "request_timeout_ms": args.request_timeout_ms,
              "fjord": args.fjord, "started": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    failed = True
    try:
        topo.create()
        cluster = Cluster(topo, run_dir, args.fjord, args.image_mb, args.partitions)
        for node in cluster.nodes.values():
            node.start()
        cluster.wait_ready()
        cluster.create_topic()
        if not cluster.wait_isr_full():
            raise HarnessError("the new topic's ISR never filled" + cluster.logs())
        log(f"cluster ready, topic {cluster.topic} ({args.partitions} partitions, RF 3, "
            f"min.insync.replicas 2), bootstrap {cluster.bootstrap}")

        stop = os.path.join(run_dir, "stop")
        run_max = int(args.seconds) + 900
        producers = {}
        for tag in ("a", "b"):
            out = os.path.join(run_dir, f"produced-{tag}.jsonl")
            producers[tag] = out
            procs.append(client(cluster, "produce", out, run_dir, stop,
                                ["--tag", tag, "--per-second", str(args.per_second),
                                 "--message-timeout-ms", str(args.message_timeout_ms),
                                 "--request-timeout-ms", str(args.request_timeout_ms)],
                                run_max))
        live = os.path.join(run_dir, "live.jsonl")
        procs.append(client(cluster, "follow", live, run_dir, stop, (), run_max))
        # The producers make progress before the first fault.
        end = time.monotonic() + WAIT_SECONDS
        while not all(acked_lines(p) >= 20 for p in producers.values()):
            exited = [p.args[2] for p in procs if p.poll() is not None]
            if exited or time.monotonic() >= end:
                raise HarnessError(f"producers acknowledged nothing before the faults "
                                   f"(clients exited: {exited})" + cluster.logs())
            time.sleep(0.5)

        nemesis = Nemesis(cluster, args.seed, args.kinds, (args.hold_min, args.hold_max),
                          (args.gap_min, args.gap_max), args.overlap)
        try:
            nemesis.run(args.seconds)
        finally:
            report["faults"] = nemesis.faults
        topo.heal_all()
        for node in cluster.nodes.values():
            node.free_disk()
            if node.paused:
                node.resume()
        nemesis.check_crashes()
        for node in cluster.nodes.values():
            if not node.running():
                node.start()
        log(f"all healed; quiet for {args.quiet}s")
        time.sleep(args.quiet)
        with open(stop, "w"):
            pass
        for p in procs:
            wait_exit(p, args.message_timeout_ms / 1000 + 120, f"client {p.args[2]}")
        nemesis.check_crashes()
        report["crashes"] = nemesis.crashes
        # A node that does not serve again once every fault healed is a
        # liveness finding (recorded); it is restarted, as an operator
        # would, so the final read and the checker still run.
        missing, status = cluster.not_ready()
        report["stuck"] = []
        for i in missing:
            node = cluster.nodes[i]
            log(f"node {i} not serving {WAIT_SECONDS}s after every fault healed; restarting it\n"
                f"{node.log_tail()}")
            report["stuck"].append({"node": i, "status": status, "log_tail": node.log_tail(60)})
            if node.running():
                node.kill()
            node.start()
        cluster.wait_ready()
        report["isr_full_at_end"] = cluster.wait_isr_full()

        histories = {tag: chaos_checker.load_jsonl(path) for tag, path in producers.items()}
        report["fatal"] = [line["fatal"] for lines in histories.values() for line in lines
                           if "fatal" in line]
        ends = {}
        for lines in histories.values():
            for line in lines:
                if line.get("e") is None and isinstance(line.get("o"), int) and line["o"] >= 0:
                    ends[line["p"]] = max(ends.get(line["p"], 0), line["o"] + 1)
        final = os.path.join(run_dir, "final.jsonl")
        min_ends = ",".join(f"{p}:{o}" for p, o in sorted(ends.items()))
        reader = client(cluster, "consume", final, run_dir, None,
                        ["--min-ends", min_ends] if min_ends else [], 600)
        if wait_exit(reader, 400, "final read") != 0:
            raise HarnessError("the final read failed: "
                               + open(f"{final}.stdout").read() + cluster.logs())
        producer_histories = [chaos_checker.Producer(tag, lines) for tag, lines in histories.items()]
        errors = {}
        for lines in histories.values():
            for line in lines:
                if line.get("e"):
                    name = line["e"].split(":")[0]
                    errors[name] = errors.get(name, 0) + 1
        report["producer_errors"] = errors
        final_read = [r for r in chaos_checker.load_jsonl(final) if "v" in r]
        live_reads = [r for r in chaos_checker.load_jsonl(live) if "v" in r]
        result = chaos_checker.check(producer_histories, final_read, live_reads)
        report["checker"] = result
        report["node_log_lines"] = {
            i: node.log_counts() for i, node in cluster.nodes.items()
        }
        failed = (not result["ok"] or bool(report["crashes"]) or bool(report["fatal"])
                  or (bool(report["stuck"]) and not args.stuck_is_known))
    except BaseException as error:
        report["harness_error"] = f"{type(error).__name__}: {error}"
        log(f"harness failed: {report['harness_error']}")
        raise
    finally:
        report["ended"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if failed and args.keep_dir and cluster:
            keep(run_dir, cluster, args.keep_dir)
        if cluster:
            for node in cluster.nodes.values():
                node.stop_and_unmount()
        topo.destroy()
        write_report(report, args.report)
        if failed and not args.keep_dir:
            log(f"logs and histories kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return 1 if failed else 0


def keep(run_dir, cluster, dest):
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            shutil.copy(path, dest)
    for i, node in cluster.nodes.items():
        if os.path.exists(node.log_path):
            shutil.copy(node.log_path, os.path.join(dest, f"node{i}.log"))
    log(f"logs and histories kept in {dest}")


def write_report(report, path):
    faults = report.get("faults", [])
    by_kind = {}
    for f in faults:
        by_kind[f["kind"]] = by_kind.get(f["kind"], 0) + 1
    report["faults_by_kind"] = by_kind
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    md = os.path.splitext(path)[0] + ".md"
    checker = report.get("checker") or {}
    counts = checker.get("counts", {})
    lines = [
        f"# Chaos run, seed {report['seed']}",
        "",
        f"- {report['started']} to {report.get('ended')}; {report['seconds']} s of faults, "
        f"up to {report.get('overlap', 1)} at once; binary `{report['fjord']}`",
        f"- result: **{'no anomaly' if checker.get('ok') else 'ANOMALIES or failure'}**"
        + (f" (harness error: {report['harness_error']})" if "harness_error" in report else ""),
        "",
        "## Faults",
        "",
        "| kind | count |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(by_kind.items())],
        "",
        "## Records",
        "",
        *[f"- {k}: {v}" for k, v in counts.items()],
        f"- producer errors (not acknowledged): {report.get('producer_errors', {})}",
        f"- fatal producer errors: {report.get('fatal', [])}",
        f"- nodes that exited by themselves: {len(report.get('crashes', []))}",
        f"- nodes that did not serve again after every fault healed (restarted): "
        f"{[x['node'] for x in report.get('stuck', [])]}",
        "",
        "## Node log lines (evidence the faults bit)",
        "",
        *[f"- node {i}: {c}" for i, c in report.get("node_log_lines", {}).items()],
        "",
        "## Anomalies",
        "",
    ]
    for kind, a in checker.get("anomalies", {}).items():
        lines.append(f"- {kind}: {a['count']}")
        for example in a["examples"]:
            lines.append(f"  - `{json.dumps(example)}`")
    lines += ["", "## Timeline (seconds since the first fault)", "",
              "| # | start | heal | kind | target | what |", "|---|---|---|---|---|---|"]
    for n, f in enumerate(faults):
        lines.append(f"| {n} | {f['start']} | {f.get('heal')} | {f['kind']} | {f['target']} | "
                     f"{f['detail']} |")
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    log(f"report: {path} and {md}")


def selftest(_args):
    """Each fault of the topology cuts what it claims and healing restores
    it, shown with TCP connects (and UDP datagrams for one-way cuts)
    between listeners in the namespaces; exit 0 when every probe matched."""
    clean_stale()
    topo = Topology()
    listeners = []
    run_dir = tempfile.mkdtemp(prefix=f"fjord-chaos-{os.getpid()}-")
    failures = []
    try:
        topo.create()
        for i in topo.ns:
            code = (
                "import socket,threading\n"
                f"t=socket.socket(); t.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"t.bind(('{topo.addr(i)}',{PROBE_PORT})); t.listen(64)\n"
                "def acc():\n"
                "  while True: t.accept()[0].close()\n"
                "threading.Thread(target=acc,daemon=True).start()\n"
                f"u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(('{topo.addr(i)}',{PROBE_PORT}))\n"
                f"f=open('{run_dir}/udp{i}','a',buffering=1)\n"
                "while True: f.write(u.recv(100).decode()+'\\n')\n"
            )
            listeners.append(subprocess.Popen(topo.exec(i, "python3", "-c", code),
                                              preexec_fn=die_with_parent))
        time.sleep(1)
        token = [0]

        def udp(src, dst):
            """True when a datagram from src reaches dst's listener."""
            token[0] += 1
            t = f"{src}-{dst}-{token[0]}"
            code = (f"import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); "
                    f"s.bind(('{topo.addr(src)}',0))\n"
                    f"try: s.sendto(b'{t}',('{topo.addr(dst)}',{PROBE_PORT}))\nexcept OSError: pass")
            subprocess.run(topo.exec(src, "python3", "-c", code), capture_output=True, timeout=10)
            time.sleep(0.3)
            try:
                return t in open(f"{run_dir}/udp{dst}").read().split()
            except OSError:
                return False

        def expect(label, blocked=(), udp_ok=(), udp_blocked=()):
            for i in topo.ns:
                if not probe_tcp(topo, None, topo.addr(i), PROBE_PORT):
                    failures.append(f"{label}: clients cannot reach node {i}")
                for j in topo.ns:
                    if i == j:
                        continue
                    ok = probe_tcp(topo, i, topo.addr(j), PROBE_PORT)
                    want = (i, j) not in blocked
                    if ok != want:
                        failures.append(f"{label}: tcp {i}->{j} {'ok' if ok else 'cut'}, "
                                        f"want {'ok' if want else 'cut'}")
            for src, dst in udp_ok:
                if not udp(src, dst):
                    failures.append(f"{label}: udp {src}->{dst} lost, want delivered")
            for src, dst in udp_blocked:
                if udp(src, dst):
                    failures.append(f"{label}: udp {src}->{dst} delivered, want dropped")
            log(f"selftest {label}: {'ok' if not failures else failures}")

        all_udp = [(i, j) for i in topo.ns for j in topo.ns if i != j]
        expect("healthy", udp_ok=all_udp)
        topo.cut_link(1, 2)
        expect("cut 1-2", blocked={(1, 2), (2, 1)}, udp_blocked=[(1, 2), (2, 1)],
               udp_ok=[(1, 3), (3, 2)])
        topo.heal_link(1, 2)
        expect("healed 1-2", udp_ok=all_udp)
        for j in (2, 3):
            topo.cut_link(1, j)
        expect("isolate 1", blocked={(1, 2), (2, 1), (1, 3), (3, 1)},
               udp_blocked=[(1, 2), (3, 1)], udp_ok=[(2, 3), (3, 2)])
        topo.heal_all()
        expect("healed all", udp_ok=all_udp)
        topo.one_way(2, 3)
        # TCP needs both directions, so 3->2 connects fail too; datagrams
        # show the direction: 3 -> 2 still delivered, 2 -> 3 dropped.
        expect("one-way 2->3", blocked={(2, 3), (3, 2)}, udp_blocked=[(2, 3)],
               udp_ok=[(3, 2), (2, 1), (1, 3)])
        topo.heal_one_way(2, 3)
        expect("healed one-way", udp_ok=all_udp)
        # Overlapping faults: a link cut twice (an isolation and a link
        # cut) stays down until both heal; a one-way cut over a cut link
        # keeps its direction blackholed when the link comes back.
        topo.cut_link(1, 2)
        topo.cut_link(1, 2)
        topo.one_way(2, 3)
        topo.cut_link(2, 3)
        topo.heal_link(1, 2)
        topo.heal_link(2, 3)
        expect("overlapping: 1-2 cut twice, healed once; 2->3 one-way under a healed cut",
               blocked={(1, 2), (2, 1), (2, 3), (3, 2)},
               udp_blocked=[(1, 2), (2, 1), (2, 3)], udp_ok=[(3, 2), (1, 3), (3, 1)])
        topo.heal_link(1, 2)
        topo.heal_one_way(2, 3)
        expect("overlapping: all healed", udp_ok=all_udp)
    finally:
        for p in listeners:
            p.kill()
            p.wait()
        topo.destroy()
        shutil.rmtree(run_dir, ignore_errors=True)
    leftover = [line for line in sh("ip", "netns", "list").stdout.splitlines()
                if any(ns in line for ns in topo.ns.values())]
    if leftover:
        failures.append(f"namespaces left after destroy: {leftover}")
    for failure in failures:
        print(f"FAILED: {failure}", flush=True)
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "selftest"])
    parser.add_argument("--fjord", help="the fjord binary")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--report", default="target/chaos/report.json")
    parser.add_argument("--keep-dir", help="copy logs and histories here when the run fails")
    parser.add_argument("--kinds", default=",".join(FAULT_KINDS),
                        help="comma-separated fault kinds to draw from")
    parser.add_argument("--partitions", type=int, default=5)
    parser.add_argument("--per-second", type=float, default=100.0, help="per producer")
    parser.add_argument("--message-timeout-ms", type=int,
                        help="librdkafka's message.timeout.ms: 60000 by default, 300000 (its own "
                             "default) with --overlap > 1, where two faults at once can keep a "
                             "partition below min.insync.replicas for minutes; a message timing "
                             "out makes librdkafka bump its epoch, which can duplicate possibly "
                             "persisted messages of other partitions (confluentinc/librdkafka#4953)")
    parser.add_argument("--request-timeout-ms", type=int, default=30000,
                        help="producers' request.timeout.ms: above the longest fault "
                        "(see replication_clients.py)")
    parser.add_argument("--overlap", type=int, default=1,
                        help="faults active at once (1: one at a time)")
    parser.add_argument("--hold-min", type=float, default=3.0)
    parser.add_argument("--hold-max", type=float, default=12.0)
    parser.add_argument("--gap-min", type=float, default=2.0)
    parser.add_argument("--gap-max", type=float, default=6.0)
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds after the last heal")
    parser.add_argument("--stuck-is-known", action="store_true",
                        help="a node that stays fenced after the faults healed is reported, "
                        "restarted and does not fail the run (for investigating a liveness "
                        "finding; no CI run passes it since N4, docs/CORRECTNESS.md, was fixed)")
    parser.add_argument("--image-mb", type=int, default=512, help="each node's filesystem")
    args = parser.parse_args()
    args.kinds = [k for k in args.kinds.split(",") if k]
    if args.message_timeout_ms is None:
        args.message_timeout_ms = 60000 if args.overlap <= 1 else 300000
    if args.overlap < 1:
        parser.error("--overlap must be at least 1")
    unknown = set(args.kinds) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}")
    if args.command == "run" and not args.fjord:
        parser.error("run needs --fjord")
    if os.geteuid() != 0:
        print("chaos.py needs root (network namespaces, loop mounts)", file=sys.stderr)
        return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        return {"run": run, "selftest": selftest}[args.command](args)
    except HarnessError as error:
        print(f"HARNESS FAILED: {error}", flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
