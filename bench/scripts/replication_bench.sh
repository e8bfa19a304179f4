#!/usr/bin/env bash
# Issue 14 replication figures: W1 and W3 on a 3-node cluster on this one
# machine (loadgen --embedded-nodes 3, one shard per node), topics with
# replication factor 3 (min.insync.replicas=2, acks=all) next to
# replication factor 1 on the same 3 nodes, alternating, plus the fio and
# iperf3 ceilings of the same session (docs/BENCHMARKS.md, "Issue 14").
#
#   bench/scripts/replication_bench.sh BIN_DIR WORK_DIR [ROUNDS]
#
# BIN_DIR holds release builds of `fjord` and `loadgen`
# (cargo build --release -p fjord-broker -p fjord-bench); WORK_DIR is on
# the data disk (fresh data dirs are made and removed under it); ROUNDS
# (default 2) alternates RF=1 and RF=3 for each workload (W1, W3, and W3
# at a tenth of its rate). Every run's
# JSON is kept as WORK_DIR/<workload>-rf<N>-r<round>.json and a summary
# table is printed at the end. The three nodes and loadgen's actors share
# this machine's cores: the figures compare RF=3 with RF=1, they are not
# what three machines would do.
set -euo pipefail

BIN=${1:?usage: $0 BIN_DIR WORK_DIR [ROUNDS]}
WORK=${2:?usage: $0 BIN_DIR WORK_DIR [ROUNDS]}
ROUNDS=${3:-2}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

step() { printf '\n==> %s\n' "$*" >&2; }

step "ceilings: fio (1 MiB direct write + fdatasync), iperf3 loopback"
mkdir -p "$WORK/fio"
fio --name=seq1m --directory="$WORK/fio" --rw=write --bs=1M --size=1G --direct=1 --fdatasync=1 \
  --overwrite=1 --ioengine=sync --output-format=json >"$WORK/fio.json"
rm -rf "$WORK/fio"
iperf3 -s -D -1 -B 127.0.0.1 >/dev/null
sleep 0.5
iperf3 -c 127.0.0.1 -t 5 -l 1M -J >"$WORK/iperf3.json"

W1=(--topic w1 --producers 1 --consumers 0 --partitions 1 --message-size 1024
  --batch-size 1048576 --acks all --warmup 5s --duration 30s)
W3=(--topic w3 --producers 4 --consumers 4 --partitions 16 --message-size 1024
  --rate 97656 --batch-size 65536 --linger-ms 1 --acks all --warmup 5s --duration 30s)
# W3 at a tenth of its rate (10 MB/s): a latency comparison below the
# replicated cluster's ceiling on this machine.
W3LOW=(--topic w3 --producers 4 --consumers 4 --partitions 16 --message-size 1024
  --rate 9766 --batch-size 65536 --linger-ms 1 --acks all --warmup 5s --duration 30s)

run() {
  local name=$1 rf=$2 round=$3
  shift 3
  local data="$WORK/data-$name-rf$rf"
  local configs=()
  [ "$rf" -gt 1 ] && configs=(--topic-config min.insync.replicas=2)
  rm -rf "$data"
  step "$name RF=$rf round $round"
  "$BIN/loadgen" --embedded --embedded-nodes 3 --broker-shards 1 --fjord-bin "$BIN/fjord" \
    --data-dir "$data" --no-spin --progress-interval 5 \
    --replication-factor "$rf" "${configs[@]}" \
    --json "$WORK/$name-rf$rf-r$round.json" "$@" || echo "loadgen failed: $name RF=$rf round $round" >&2
  rm -rf "$data"
}

for round in $(seq 1 "$ROUNDS"); do
  # Alternate which replication factor goes first.
  if [ $((round % 2)) = 1 ]; then order=(1 3); else order=(3 1); fi
  for rf in "${order[@]}"; do run w1 "$rf" "$round" "${W1[@]}"; done
  for rf in "${order[@]}"; do run w3 "$rf" "$round" "${W3[@]}"; done
  for rf in "${order[@]}"; do run w3low "$rf" "$round" "${W3LOW[@]}"; done
done

step "summary"
python3 - "$WORK" "$ROUNDS" <<'PY'
import json, os, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def load(name):
    path = os.path.join(work, name)
    return json.load(open(path)) if os.path.exists(path) else None
fio = load("fio.json")
if fio:
    job = fio["jobs"][0]["write"]
    print(f"fio 1 MiB direct write + fdatasync: {job['bw_bytes'] / 1e6:.0f} MB/s")
ip = load("iperf3.json")
if ip:
    print(f"iperf3 loopback: {ip['end']['sum_received']['bits_per_second'] / 1e9:.1f} Gbit/s")
def ms(h, p):
    v = h.get("percentiles", {}).get(p)
    return "-" if v is None else f"{v / 1e6:.1f}"
print("| workload | RF | round | produce MB/s (msgs/s) | acked / sent | latency | p50 / p99 / p99.9 ms | load at end |")
print("|---|---|---|---|---|---|---|---|")
for name, metric in (("w1", "publish"), ("w3", "end_to_end"), ("w3low", "end_to_end")):
    for rnd in range(1, rounds + 1):
        for rf in (1, 3):
            j = load(f"{name}-rf{rf}-r{rnd}.json")
            if j is None:
                print(f"| {name.upper()} | {rf} | {rnd} | failed | | | | |")
                continue
            m = j["producer"]["measured"]
            h = j["latency_ns"][metric]
            r = j["latency_ns"]["request"]
            print(
                f"| {name.upper()} | {rf} | {rnd} | {m.get('mb_per_s', 0):.1f} ({m.get('msgs_per_s', 0):.0f}) "
                f"| {j['producer']['messages_acked']} / {j['producer']['messages_sent']} "
                f"| {metric}; request | {ms(h, 'p50')} / {ms(h, 'p99')} / {ms(h, 'p99.9')}; "
                f"{ms(r, 'p50')} / {ms(r, 'p99')} / {ms(r, 'p99.9')} "
                f"| {j['machine'].get('load_average_at_end')} |"
            )
PY
