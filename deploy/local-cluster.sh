#!/usr/bin/env bash
# A 3-node Fjord cluster on 127.0.0.1, for trying the cluster out on one
# machine (CLUSTER.md; README "Run a 3-node cluster").
#
#   deploy/local-cluster.sh start  [DIR]   # start nodes 1, 2, 3 (data, logs, pids under DIR)
#   deploy/local-cluster.sh status [DIR]   # `fjord cluster status` of the running cluster
#   deploy/local-cluster.sh stop   [DIR]   # SIGTERM every node, wait for it to exit
#
# DIR defaults to ./fjord-cluster. Node N keeps its data in DIR/nodeN/data,
# its log in DIR/nodeN/fjord.log and its pid in DIR/nodeN/fjord.pid; a
# second `start` on the same DIR restarts the stopped nodes from their data.
#
# Ports of node N (1, 2, 3), from bases overridable by environment:
#   native protocol  FJORD_LOCAL_NATIVE_BASE + 100*(N-1): 19192, 19292, 19392
#                    (each shard also listens on the ports right above it)
#   Kafka protocol   FJORD_LOCAL_KAFKA_BASE + N-1:        19092, 19093, 19094
#   inter-node       FJORD_LOCAL_CLUSTER_BASE + N-1:      19992, 19993, 19994
# Other settings:
#   FJORD_BIN          the fjord binary (default: `fjord` on PATH, else
#                      target/release/fjord or target/debug/fjord of this checkout)
#   FJORD_LOCAL_SHARDS shards per node (default 1: three nodes share this machine)
#   FJORD_LOCAL_WAIT_S how long start and stop wait for each node (default 60)
# Any other FJORD_* variable (e.g. FJORD_BROKER_SESSION_TIMEOUT_MS) reaches
# every node as usual.
set -euo pipefail

NODES=(1 2 3)
NATIVE_BASE=${FJORD_LOCAL_NATIVE_BASE:-19192}
KAFKA_BASE=${FJORD_LOCAL_KAFKA_BASE:-19092}
CLUSTER_BASE=${FJORD_LOCAL_CLUSTER_BASE:-19992}
SHARDS=${FJORD_LOCAL_SHARDS:-1}
WAIT_S=${FJORD_LOCAL_WAIT_S:-60}
HOST=127.0.0.1

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

command_name=${1:-}
[ -n "$command_name" ] || usage
DIR=${2:-./fjord-cluster}

find_fjord() {
  if [ -n "${FJORD_BIN:-}" ]; then
    echo "$FJORD_BIN"
    return
  fi
  if command -v fjord >/dev/null 2>&1; then
    command -v fjord
    return
  fi
  local root
  root=$(cd "$(dirname "$0")/.." && pwd)
  for build in release debug; do
    if [ -x "$root/target/$build/fjord" ]; then
      echo "$root/target/$build/fjord"
      return
    fi
  done
  echo "local-cluster.sh: no fjord binary: build it (cargo build --release -p fjord-broker)," \
    "put it on PATH, or set FJORD_BIN" >&2
  exit 1
}

native_port() { echo $((NATIVE_BASE + 100 * ($1 - 1))); }
kafka_port() { echo $((KAFKA_BASE + $1 - 1)); }
cluster_port() { echo $((CLUSTER_BASE + $1 - 1)); }

voters() {
  local list="" n
  for n in "${NODES[@]}"; do
    list="${list:+$list,}$n@$HOST:$(cluster_port "$n")"
  done
  echo "$list"
}

joined() {
  local kind=$1 list="" n
  for n in "${NODES[@]}"; do
    list="${list:+$list,}$HOST:$("${kind}_port" "$n")"
  done
  echo "$list"
}

# Whether process $1 runs (a zombie nobody reaped yet does not).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
  [ "$state" != Z ]
}

pid_of() {
  local file="$DIR/node$1/fjord.pid"
  [ -f "$file" ] || return 1
  local pid
  pid=$(cat "$file")
  [ -n "$pid" ] && alive "$pid" && echo "$pid"
}

start_node() {
  local n=$1 fjord=$2 node_dir="$DIR/node$1"
  if pid=$(pid_of "$n"); then
    echo "node $n already runs (pid $pid)"
    return
  fi
  mkdir -p "$node_dir/data"
  # A killed node leaves its address file behind; wait for a fresh one.
  rm -f "$node_dir/data/broker.addr"
  nohup "$fjord" start \
    --node-id "$n" \
    --data-dir "$node_dir/data" \
    --listen "$HOST:$(native_port "$n")" \
    --kafka-listen "$HOST:$(kafka_port "$n")" \
    --cluster-listen "$HOST:$(cluster_port "$n")" \
    --controller-quorum-voters "$(voters)" \
    --shards "$SHARDS" \
    </dev/null >>"$node_dir/fjord.log" 2>&1 &
  echo $! >"$node_dir/fjord.pid"
  echo "node $n started (pid $!), log $node_dir/fjord.log"
}

# Waits until node N serves (its broker.addr appears) or exits.
wait_serving() {
  local n=$1 node_dir="$DIR/node$1" waited=0
  while [ ! -s "$node_dir/data/broker.addr" ]; do
    if ! pid_of "$n" >/dev/null; then
      echo "node $n exited; the end of its log ($node_dir/fjord.log):" >&2
      tail -n 20 "$node_dir/fjord.log" >&2
      return 1
    fi
    if [ "$waited" -ge $((WAIT_S * 10)) ]; then
      echo "node $n is not serving after ${WAIT_S}s; see $node_dir/fjord.log" >&2
      return 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

start() {
  local fjord n failed=0
  fjord=$(find_fjord)
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  for n in "${NODES[@]}"; do
    start_node "$n" "$fjord"
  done
  for n in "${NODES[@]}"; do
    wait_serving "$n" || failed=1
  done
  if [ "$failed" = 1 ]; then
    echo "local-cluster.sh: not every node is serving; stop them with: $0 stop $DIR" >&2
    exit 1
  fi
  cat <<EOF

Fjord cluster of ${#NODES[@]} nodes on $HOST, data under $DIR
  Kafka clients:   bootstrap.servers=$(joined kafka)
  native clients:  --brokers $(joined native)
  status:          $fjord cluster status --brokers $(joined native)
                   (or: $0 status $DIR)
  try it:          $fjord topic create demo --partitions 12 --brokers $HOST:$(native_port 1)
  stop:            $0 stop $DIR
EOF
}

stop() {
  local n pid waited
  local -A signalled=()
  for n in "${NODES[@]}"; do
    if pid=$(pid_of "$n"); then
      kill -TERM "$pid"
      signalled[$n]=$pid
      echo "node $n: SIGTERM sent (pid $pid)"
    else
      echo "node $n: not running"
      rm -f "$DIR/node$n/fjord.pid"
    fi
  done
  for n in "${!signalled[@]}"; do
    pid=${signalled[$n]}
    waited=0
    while alive "$pid"; do
      if [ "$waited" -ge $((WAIT_S * 10)) ]; then
        echo "node $n (pid $pid) still runs after ${WAIT_S}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
      waited=$((waited + 1))
    done
    rm -f "$DIR/node$n/fjord.pid"
    echo "node $n stopped"
  done
}

status() {
  local fjord n running=()
  fjord=$(find_fjord)
  for n in "${NODES[@]}"; do
    if pid=$(pid_of "$n"); then
      echo "node $n: running (pid $pid), native $HOST:$(native_port "$n"), kafka $HOST:$(kafka_port "$n")"
      running+=("$HOST:$(native_port "$n")")
    else
      echo "node $n: not running"
    fi
  done
  if [ "${#running[@]}" = 0 ]; then
    echo "no node runs; start them with: $0 start $DIR"
    exit 1
  fi
  echo
  # Ask the first running node: the answer covers the whole cluster.
  exec "$fjord" cluster status --brokers "${running[0]}"
}

case "$command_name" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
