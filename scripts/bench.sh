#!/usr/bin/env bash
# Benchmark: put and get a random file (1 GiB by default) on a fresh local
# regtest network of 4 providers (scripts/regtest-up.sh; every put is paid
# for), once as a single copy and once 2-of-4 erasure coded, with release
# builds. Prints MiB/s each way and the client daemon's peak RSS for each,
# and how long auditing every shard of the 2-of-4 file once takes. Then
# daemon/examples/audit-bench.rs measures a provider's cost per audit
# challenge, a client's cost to verify one, and Merkle-root hashing speed.
# Also prints where the time went, from each daemon's `perf` counters
# (busy seconds per stage, summed over threads: stages overlap).
# Targets on a 2-core machine: medium (2-of-4) >= 200 MiB/s each way, the
# client's peak RSS <= 160 MiB.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
  cat <<EOF
usage: $0   (env: BENCH_SIZE_MIB, default 1024; BENCH_LEVELS, default "low medium")

Rebuilds the release binaries, starts a throwaway regtest network in a temp
dir on 127.0.0.1, puts and gets a random file at low and medium redundancy,
prints the figures, and stops and removes everything it started.
EOF
}
case ${1:-} in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

SIZE_MIB=${BENCH_SIZE_MIB:-1024}
LEVELS=${BENCH_LEVELS:-low medium}
for l in $LEVELS; do [[ $l == low || $l == medium ]] || die "BENCH_LEVELS takes low and medium"; done
[[ $SIZE_MIB =~ ^[0-9]+$ && $SIZE_MIB -ge 1 ]] || die "BENCH_SIZE_MIB must be a positive number"
DIR=$(mktemp -d "${TMPDIR:-/tmp}/p2pstore-bench.XXXXXX")
cleanup() { "$ROOT/scripts/regtest-down.sh" --dir "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT

ensure_bins
(cd "$ROOT" && cargo build --release -p p2pstored --example audit-bench >&2) || die "cargo build failed"
P2PSTORE_CAPACITY=8GiB "$ROOT/scripts/regtest-up.sh" --providers 4 --dir "$DIR" > /dev/null
export P2PSTORE_DATADIR=$DIR/client
head -c $((SIZE_MIB << 20)) /dev/urandom > "$DIR/in.bin"
pid=$(cat "$DIR/client/p2pstored.pid")
now() { date +%s.%N; }

# perf TAG: every daemon's stage counters, one JSON line per daemon.
perf() {
  local d
  for d in "$DIR"/client "$DIR"/provider-*; do
    echo "$1 $(basename "$d") $(cli --datadir "$d" --json perf | tr -d '\n')"
  done >> "$DIR/perf.txt"
}

# run LEVEL: one put/get round trip at a redundancy level.
run() {
  local level=$1 t0 t1 t2 t3 file_id rss
  # Start each level from a quiet disk: without this, the writeback of the
  # level before (gigabytes of shards) lands in this one's fsyncs.
  sync
  # Reset the peak-RSS counter so each level reports its own peak.
  echo 5 > "/proc/$pid/clear_refs" 2>/dev/null || log "cannot reset VmHWM; peak RSS covers earlier runs too"
  perf "$level-start"
  t0=$(now); file_id=$(cli put --redundancy "$level" "$DIR/in.bin"); t1=$(now)
  perf "$level-put"
  cli get "$file_id" -o "$DIR/out.bin" > /dev/null; t2=$(now)
  perf "$level-get"
  cmp "$DIR/in.bin" "$DIR/out.bin" || die "$level round trip is not byte-identical"
  rm -f "$DIR/out.bin"
  # Every shard of the file, audit_leaves_per_shard (16) leaves each.
  cli --json audit "$file_id" > "$DIR/audit.json"; t3=$(now)
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(any(p["failed"] or p["unknown"] for p in r))' "$DIR/audit.json" \
    || die "$level audit found failures: $(cat "$DIR/audit.json")"
  cli rm "$file_id" > /dev/null
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  echo "$level $t0 $t1 $t2 $t3 $rss"
}

results=$(for l in $LEVELS; do run "$l"; done)
python3 - "$SIZE_MIB" "$results" "$DIR/perf.txt" <<'PY'
import json, sys
from collections import defaultdict
size = float(sys.argv[1])
# perf[tag][role][stage] = seconds, providers summed.
perf = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
for line in open(sys.argv[3]):
    tag, daemon, body = line.split(" ", 2)
    role = "client" if daemon == "client" else "providers"
    for s in json.loads(body):
        perf[tag][role][s["stage"]] += s["seconds"]
def breakdown(level, a, b, wall):
    parts = []
    for role in ("client", "providers"):
        d = {k: perf[f"{level}-{b}"][role][k] - perf[f"{level}-{a}"][role][k] for k in perf[f"{level}-{b}"][role]}
        busy = ", ".join(f"{k} {v:.2f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v >= 0.005)
        parts.append(f"{role}: {busy or 'idle'}")
    return f"  {level} {b} ({wall:.2f} s wall), busy s: " + "; ".join(parts)
details = []
ok = False
print(f"file: {size:.0f} MiB, 4 providers, release build, payments on regtest")
print(f"{'redundancy':<18}{'put MiB/s':>10}{'get MiB/s':>10}{'peak RSS MiB':>14}{'audit all s':>13}")
for line in sys.argv[2].splitlines():
    level, t0, t1, t2, t3, rss = line.split()
    t0, t1, t2, t3 = float(t0), float(t1), float(t2), float(t3)
    put, get, rss = size / (t1 - t0), size / (t2 - t1), int(rss) / 1024
    label = {"low": "low (1 copy)", "medium": "medium (2-of-4)"}[level]
    print(f"{label:<18}{put:10.1f}{get:10.1f}{rss:14.1f}{t3 - t2:13.2f}")
    details.append(breakdown(level, "start", "put", t1 - t0))
    details.append(breakdown(level, "put", "get", t2 - t1))
    if level == "medium":
        ok = put >= 200 and get >= 200 and rss <= 160
print("targets (medium >=200 MiB/s each way, <=160 MiB client peak RSS):", "met" if ok else "NOT met")
print("where the time went (stages overlap across threads):")
print("\n".join(details))
PY
echo
echo "audit costs (daemon/examples/audit-bench.rs: 64 shards of 2 MiB, 20,000 random challenges, warm page cache):"
"$TARGET/release/examples/audit-bench"
