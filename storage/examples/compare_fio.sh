#!/usr/bin/env bash
# Runs storage_bench and fio alternately on the same ext4 directory, so the
# two see the same (noisy, shared) disk. Usage:
#   storage/examples/compare_fio.sh [dir] [rounds]
set -euo pipefail
dir=${1:-/tmp/fjord-bench}
rounds=${2:-5}
bench=target/release/examples/storage_bench
cargo build --release -q -p fjord-storage --example storage_bench
mkdir -p "$dir"
for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  "$bench" "$dir/run" seq1m
  fio --name=seq1m --directory="$dir" --rw=write --bs=1M --size=1G --direct=1 \
      --fdatasync=1 --overwrite=1 --ioengine=sync | grep -E 'WRITE:'
  rm -f "$dir"/seq1m*
  "$bench" "$dir/run" small4k
  fio --name=lat4k --directory="$dir" --rw=write --bs=4k --size=80M --direct=1 \
      --fdatasync=1 --overwrite=1 --ioengine=sync --output-format=json \
    | python3 -c '
import json, sys
job = json.load(sys.stdin)["jobs"][0]
w = job["write"]["clat_ns"]["percentile"]; s = job["sync"]["lat_ns"]["percentile"]
p = lambda d, k: d[k] / 1e6
print("fio 4k: write p50 %.3f ms + fdatasync p50 %.3f ms = %.3f ms; write p99 %.3f + fdatasync p99 %.3f = %.3f ms; %.0f commits/s (mean %.3f ms)" % (
    p(w, "50.000000"), p(s, "50.000000"), p(w, "50.000000") + p(s, "50.000000"),
    p(w, "99.000000"), p(s, "99.000000"), p(w, "99.000000") + p(s, "99.000000"),
    job["write"]["iops"], 1000 / job["write"]["iops"]))'
  rm -f "$dir"/lat4k*
done
"$bench" "$dir/run" read
