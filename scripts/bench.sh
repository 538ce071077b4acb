#!/usr/bin/env bash
# Benchmark: put and get a random file (1 GiB by default) on a fresh local
# network with release builds; prints MiB/s each way and the client
# daemon's peak RSS. Targets on a 2-core machine: >= 100 MiB/s each way,
# client peak RSS <= 200 MiB.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SIZE_MIB=${BENCH_SIZE_MIB:-1024}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/p2pstore-bench.XXXXXX")
cleanup() { "$ROOT/scripts/localnet-down.sh" --dir "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT

P2PSTORE_REBUILD=1 ensure_bins
P2PSTORE_CAPACITY=8GiB "$ROOT/scripts/localnet-up.sh" --providers 3 --dir "$DIR" > /dev/null
export P2PSTORE_DATADIR=$DIR/client
head -c $((SIZE_MIB << 20)) /dev/urandom > "$DIR/in.bin"

now() { date +%s.%N; }
t0=$(now); file_id=$(cli put "$DIR/in.bin"); t1=$(now)
cli get "$file_id" -o "$DIR/out.bin"; t2=$(now)
cmp "$DIR/in.bin" "$DIR/out.bin" || die "round trip is not byte-identical"
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$(cat "$DIR/client/p2pstored.pid")/status")

python3 - "$SIZE_MIB" "$t0" "$t1" "$t2" "$rss_kib" <<'PY'
import sys
size, t0, t1, t2, rss = float(sys.argv[1]), *map(float, sys.argv[2:5]), int(sys.argv[5])
put, get = size / (t1 - t0), size / (t2 - t1)
print(f"file:            {size:.0f} MiB, 3 providers, single copy")
print(f"put:             {put:7.1f} MiB/s ({t1 - t0:.2f} s)")
print(f"get:             {get:7.1f} MiB/s ({t2 - t1:.2f} s)")
print(f"client peak RSS: {rss / 1024:7.1f} MiB")
ok = put >= 100 and get >= 100 and rss / 1024 <= 200
print("targets (>=100 MiB/s each way, <=200 MiB RSS):", "met" if ok else "NOT met")
PY
