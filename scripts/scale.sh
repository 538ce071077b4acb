#!/usr/bin/env bash
# Discovery at scale on one machine: starts N daemons on loopback (a plain
# Kademlia seed, N-2 providers and a client; no rendezvous) with their own
# regtest bitcoind, then measures and prints
#   - the time to start them all;
#   - each provider's time from its start until the client's lookup of
#     its bucket finds it (median, max), and the time until all are found;
#   - the time until one full scan of every bucket finds them all;
#   - the providers the client can discover;
#   - provider lookup latency (median, p95) over the 256 bucket lookups;
#   - the client's connection count (highest seen while it works);
#   - each daemon's RSS;
#   - a 64 MiB put and get at medium redundancy, checked byte for byte.
# It fails when a provider stays undiscovered past --join-timeout, when
# the client holds more connections than its cap, or when the get differs
# from the put. Timing figures are printed, never asserted (they are
# benchmarks; README has the 200-node ones).
#
#   scripts/scale.sh [--nodes N] [--dir DIR] [--keep] [--size-mib M]
#
# Binaries: $P2PSTORED/$P2PSTORE_CLI if set (test.sh passes its debug
# builds), else release builds of this checkout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NODES=200
DIR=
KEEP=
SIZE_MIB=64
JOIN_TIMEOUT=300
STARTERS=16
PROVIDER_POLL_SECS=15
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --nodes) NODES=${2:?}; shift 2 ;;
    --dir) DIR=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
    --join-timeout) JOIN_TIMEOUT=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $NODES =~ ^[0-9]+$ && $NODES -ge 4 ]] || die "--nodes takes a number of at least 4"
PROVIDERS=$((NODES - 2))
[[ -n $DIR ]] || DIR=$(mktemp -d "${TMPDIR:-/tmp}/p2pstore-scale.XXXXXX")
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

BITCOIND=$(find_bitcoind)
ensure_bins

# Everything started is stopped on exit, by pid (the pid files).
watcher=
on_exit() {
  local rc=$? stoppers=() d
  [[ -z $watcher ]] || kill "$watcher" 2>/dev/null || true
  for d in "$DIR"/seed "$DIR"/provider-* "$DIR"/client; do
    [[ -d $d ]] || continue
    stop_daemon "$d" &
    stoppers+=($!)
  done
  # By pid: a bare `wait` would wait for bitcoind too, stopped below.
  ((${#stoppers[@]} == 0)) || wait "${stoppers[@]}"
  stop_bitcoind "$DIR"
  if [[ -n $KEEP ]]; then
    log "kept $DIR"
  elif ((rc == 0)); then
    rm -rf "$DIR"
  else
    log "failed; logs are in $DIR/*/p2pstored.log"
  fi
}
trap on_exit EXIT

start_bitcoind "$DIR" "$BITCOIND"
BTC_ARGS=(--bitcoind-rpc-url "$(btc_rpc_url "$DIR")" --bitcoind-cookie "$(btc_cookie "$DIR")")

# Every daemon listens on a port the kernel picks (tcp/0): ports picked
# here and bound later race with the 16 daemons starting at once.
start_daemon "$DIR/seed" --seed --listen /ip4/127.0.0.1/tcp/0 --rpc-bind 127.0.0.1:0
SEED=
for _ in {1..50}; do
  SEED=$(cli --datadir "$DIR/seed" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("%s/p2p/%s" % (s["listen_addrs"][0], s["peer_id"]) if s["listen_addrs"] else "")')
  [[ -z $SEED ]] || break
  sleep 0.2
done
[[ -n $SEED ]] || die "the seed does not listen (log: $DIR/seed/p2pstored.log)"
log "seed: $SEED"

now_ms() { date +%s%3N; }

# start_node NAME ARGS...: a daemon with a fresh throwaway account. Writes
# DIR/NAME/started: the time the daemon was launched (ms) and its peer id.
start_node() {
  local dir=$DIR/$1 t peer; shift
  mkdir -p "$dir"
  # od, not python: 200 interpreter starts cost the start phase seconds.
  (umask 077; od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$dir/password")
  t=$(now_ms)
  start_daemon "$dir" --listen /ip4/127.0.0.1/tcp/0 --rpc-bind 127.0.0.1:0 \
    --bootstrap "$SEED" --password-file "$dir/password" "${BTC_ARGS[@]}" "$@"
  peer=$(cli --datadir "$dir" init --password-file "$dir/password" --json |
    sed -n 's/.*"peer_id": *"\([^"]*\)".*/\1/p')
  [[ -n $peer ]] || die "init in $dir printed no peer id"
  echo "$t $peer" > "$dir/started"
}

# The client starts first and watches the providers join: it looks up
# the buckets of WATCH_BATCH of the providers started and not yet found
# at a time (find-providers --peer, one round of the directory's parallel
# lookups), taking them in turn, and notes when each is first found
# (DIR/provider-N/found). So each provider's time from its own start to
# discoverable is measured, not only the whole network's. Small batches
# keep that measure fine-grained: a call looking up 100 buckets took 90 s
# while the network was starting.
start_node client
WATCH_BATCH=8
watch_joins() {
  local f dir started_ms peer unfound batch out t cursor=0 i
  while true; do
    unfound=()
    for f in "$DIR"/provider-*/started; do
      [[ -e $f ]] || continue
      [[ -e ${f%/started}/found ]] || { read -r started_ms peer < "$f"; unfound+=("$peer"); }
    done
    if ((${#unfound[@]} == 0)); then
      [[ -e $DIR/all-started ]] && { touch "$DIR/all-found"; return 0; }
      sleep 1
      continue
    fi
    batch=()
    for ((i = 0; i < WATCH_BATCH && i < ${#unfound[@]}; i++)); do
      batch+=(--peer "${unfound[(cursor + i) % ${#unfound[@]}]}")
    done
    cursor=$((cursor + WATCH_BATCH))
    # Exit 1 when one is not found: expected here. A provider found by
    # this call counts as found when it returns.
    out=$(cli --datadir "$DIR/client" find-providers --json "${batch[@]}" 2>/dev/null || true)
    t=$(now_ms)
    for f in "$DIR"/provider-*/started; do
      dir=${f%/started}
      [[ -e $dir/found ]] && continue
      read -r started_ms peer < "$f"
      [[ $out == *"\"$peer\""* ]] && echo "$t" > "$dir/found"
    done
  done
}
(trap - EXIT; watch_joins) &
watcher=$!

T0=$SECONDS
T0_MS=$(now_ms)
log "starting $PROVIDERS providers, $STARTERS at a time..."
# Waits for the starters by pid: a bare `wait` would also wait for
# bitcoind, a child of this shell too.
starters=()
for ((i = 1; i <= PROVIDERS; i++)); do
  # A background subshell inherits the EXIT trap: drop it, or each
  # starter would stop the whole network as it ends.
  # Providers poll bitcoind every PROVIDER_POLL_SECS, not every second:
  # hundreds of wallets polling one bitcoind each second overflow its RPC
  # queue and use both cores. A payment notice makes a provider look at
  # once, so nothing waits on the slower poll.
  # One tokio worker thread per provider: with one per core, a third of
  # a 200-node run's CPU went to the kernel, much of it switching among
  # 400 busy threads (perf), and a provider here only answers the DHT.
  # With it (and the daemon's 60 s ping), 200 daemons started in 152 s,
  # not 246 s. The client keeps the default.
  (trap - EXIT; export TOKIO_WORKER_THREADS=1
    start_node "provider-$i" --provider --capacity 1GiB \
    --bitcoind-poll-secs "$PROVIDER_POLL_SECS") &
  starters+=($!)
  if ((${#starters[@]} == STARTERS)); then wait "${starters[@]}"; starters=(); fi
done
((${#starters[@]} == 0)) || wait "${starters[@]}"
for ((i = 1; i <= PROVIDERS; i++)); do
  daemon_running "$DIR/provider-$i" || die "provider-$i did not start (log: $DIR/provider-$i/p2pstored.log)"
done
STARTED=$((SECONDS - T0))
touch "$DIR/all-started"
log "all $NODES daemons up after $STARTED s"
# The watcher ends once every provider has been found.
until [[ -e $DIR/all-found ]]; do
  ((SECONDS - T0 < JOIN_TIMEOUT)) ||
    die "$(ls "$DIR"/provider-*/found 2>/dev/null | wc -l) of $PROVIDERS providers found after $JOIN_TIMEOUT s"
  sleep 1
done
wait "$watcher"
watcher=
# Per provider: launch and first-found times (ms).
for f in "$DIR"/provider-*/started; do
  read -r s _ < "$f"; read -r e < "${f%/started}/found"; echo "$s $e"
done > "$DIR/joins.txt"
read -r JOIN_MED JOIN_MAX < <(awk '{print $2 - $1}' "$DIR/joins.txt" | sort -n |
  awk '{v[NR]=$1} END {printf "%.0f %.0f\n", v[int((NR+1)/2)]/1000, v[NR]/1000}')
LAST_FOUND=$(awk -v t0="$T0_MS" '$2 > l {l=$2} END {printf "%.0f", (l - t0)/1000}' "$DIR/joins.txt")

# --- discovery ------------------------------------------------------------
found=0
until (( found >= PROVIDERS )); do
  cli --datadir "$DIR/client" find-providers --json > "$DIR/find.json"
  found=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["providers"]))' "$DIR/find.json")
  ((SECONDS - T0 < JOIN_TIMEOUT)) || die "the client finds $found of $PROVIDERS providers after $JOIN_TIMEOUT s"
  ((found >= PROVIDERS)) || sleep 2
done
JOINED=$((SECONDS - T0))
read -r LOOKUP_MEDIAN LOOKUP_P95 < <(python3 - "$DIR/find.json" <<'PY'
import json, sys
ms = sorted(l["millis"] for l in json.load(open(sys.argv[1]))["lookups"])
pick = lambda q: ms[round((len(ms) - 1) * q)]
print(pick(0.5), pick(0.95))
PY
)

# --- a put and a get --------------------------------------------------------
addr=$(cli --datadir "$DIR/client" wallet address --json | json_field address)
btc_rpc "$DIR" generatetoaddress "[101, \"$addr\"]" > /dev/null
wait_until 120 "the client's coins" bash -c \
  "[[ \$('$P2PSTORE_CLI' --datadir '$DIR/client' wallet balance --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"confirmed_sat\"])') -gt 0 ]]"

# The client's connections, sampled while it puts and gets.
conns_log=$DIR/connections.txt
: > "$conns_log"
(
  trap - EXIT
  while true; do
    cli --datadir "$DIR/client" status --json 2>/dev/null | json_field connected_peers >> "$conns_log" || true
    sleep 0.5
  done
) &
sampler=$!

head -c $((SIZE_MIB << 20)) /dev/urandom > "$DIR/in.bin"
t=$SECONDS
file_id=$(cli --datadir "$DIR/client" put "$DIR/in.bin" --redundancy medium --json | json_field file_id)
PUT_SECS=$((SECONDS - t))
t=$SECONDS
cli --datadir "$DIR/client" get "$file_id" -o "$DIR/out.bin" --json > /dev/null
GET_SECS=$((SECONDS - t))
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
cmp -s "$DIR/in.bin" "$DIR/out.bin" || die "the file got back differs from the file put"
MAX_CONNS=$(sort -n "$conns_log" | tail -1)
CAP=$("$P2PSTORED" --help | sed -n 's/.*max-outbound-connections.*\[default: \([0-9]*\)\].*/\1/p')
CAP=${CAP:-64}

# --- memory -------------------------------------------------------------------
read -r RSS_MIN RSS_MED RSS_MAX RSS_TOTAL < <(
  for d in "$DIR"/seed "$DIR"/provider-* "$DIR"/client; do
    awk '/^VmRSS:/ {print $2}' "/proc/$(cat "$d/p2pstored.pid")/status"
  done | sort -n | awk '{v[NR]=$1; s+=$1} END {printf "%d %d %d %d\n", v[1]/1024, v[int((NR+1)/2)]/1024, v[NR]/1024, s/1024}'
)

cat <<EOF
scale: $NODES nodes (1 seed, $PROVIDERS providers, 1 client), no rendezvous
  daemons started in          $STARTED s
  each provider found         median $JOIN_MED s, at most $JOIN_MAX s after its own start
  every provider found        $LAST_FOUND s after the first provider's start
  a full scan found them all  $JOINED s after the first provider's start
  providers discoverable      $found of $PROVIDERS
  bucket lookup latency       median $LOOKUP_MEDIAN ms, p95 $LOOKUP_P95 ms
  client connections          at most $MAX_CONNS during put and get (cap $CAP)
  RSS per daemon              min $RSS_MIN MiB, median $RSS_MED MiB, max $RSS_MAX MiB (total $RSS_TOTAL MiB)
  put $SIZE_MIB MiB at medium        $PUT_SECS s
  get $SIZE_MIB MiB                  $GET_SECS s, byte-identical
EOF
((MAX_CONNS <= CAP)) || die "the client held $MAX_CONNS connections, over its cap of $CAP"
