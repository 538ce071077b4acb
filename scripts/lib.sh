# Shared helpers for the p2pstore scripts. Sourced, not run.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Where cargo puts builds: $CARGO_TARGET_DIR when set (relative to the
# checkout, where the scripts run cargo), else target/.
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET == /* ]] || TARGET=$ROOT/$TARGET
DEFAULT_NET_DIR="${TMPDIR:-/tmp}/p2pstore-localnet"

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Binaries: $P2PSTORED / $P2PSTORE_CLI when both are set, else release
# builds of this checkout. cargo runs every time (a no-op when nothing
# changed): binaries that merely exist may be from an older checkout, and
# a node of an older protocol would not even talk to the others.
ensure_bins() {
  if [[ -n ${P2PSTORED:-} && -n ${P2PSTORE_CLI:-} ]]; then
    [[ -x $P2PSTORED && -x $P2PSTORE_CLI ]] || die "P2PSTORED or P2PSTORE_CLI is not an executable"
    return
  fi
  P2PSTORED=$TARGET/release/p2pstored
  P2PSTORE_CLI=$TARGET/release/p2pstore-cli
  log "building release binaries (a no-op when up to date)..."
  # -p selects only these packages, so features the tests crate asks of
  # p2pstored (failpoints, testutil) are not unified into release builds.
  (cd "$ROOT" && cargo build --release -p p2pstored -p p2pstore-cli --bin p2pstored --bin p2pstore-cli >&2) || die "cargo build failed"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for_file PATH SECONDS
wait_for_file() {
  local path=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    [[ -s $path ]] && return 0
    sleep 0.1
  done
  return 1
}

cli() { "$P2PSTORE_CLI" "$@"; }

# json_field FIELD: reads a JSON object on stdin and prints one field.
json_field() { python3 -c 'import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(v if not isinstance(v,list) else "\n".join(map(str,v)))' "$1"; }

# start_daemon DATADIR ARGS...: starts p2pstored detached, logging to
# DATADIR/p2pstored.log, and waits until its RPC is up.
start_daemon() {
  local dir=$1; shift
  mkdir -p "$dir"
  rm -f "$dir/rpc.addr"
  setsid "$P2PSTORED" --datadir "$dir" "$@" >>"$dir/p2pstored.log" 2>&1 < /dev/null &
  local launched=$! i
  for ((i = 0; i < 600; i++)); do
    [[ -s $dir/rpc.addr ]] && return 0
    # Fail fast when it exited (e.g. a bad flag) rather than wait out 60 s.
    kill -0 "$launched" 2>/dev/null || { sleep 0.2; [[ -s $dir/rpc.addr ]] && return 0; break; }
    sleep 0.1
  done
  tail -20 "$dir/p2pstored.log" >&2
  die "p2pstored in $dir did not start"
}

# stop_daemon DATADIR: SIGTERM the pid in its pid file, SIGKILL after 15 s.
stop_daemon() {
  local dir=$1 pid i
  [[ -f $dir/p2pstored.pid ]] || return 0
  pid=$(cat "$dir/p2pstored.pid")
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "p2pstored $pid did not stop; killing"
  kill -KILL "$pid" 2>/dev/null || true
}

# ---- bitcoind (regtest) ------------------------------------------------
# A network DIR made by regtest-up.sh has its bitcoind in DIR/bitcoind: the
# chain in DIR/bitcoind/regtest, the RPC cookie in DIR/bitcoind/regtest/.cookie,
# the RPC port in DIR/bitcoind/rpc.port and the pid in DIR/bitcoind/bitcoind.pid.

# A valid regtest address nobody holds a key to (BIP173's P2WPKH test vector).
BURN_ADDRESS=bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080

btc_cookie() { printf '%s\n' "$1/bitcoind/regtest/.cookie"; }
btc_rpc_url() {
  [[ -s $1/bitcoind/rpc.port ]] || return 1
  printf 'http://127.0.0.1:%s\n' "$(cat "$1/bitcoind/rpc.port")"
}

# btc_rpc DIR METHOD [PARAMS_JSON]: one JSON-RPC call to the bitcoind of the
# network in DIR, authenticated with its cookie (no bitcoin-cli needed).
# Prints the result: strings raw, anything else as JSON. On an RPC error it
# prints the error on stderr and fails.
btc_rpc() {
  local dir=$1 method=$2 params=${3:-[]} url
  url=$(btc_rpc_url "$dir") || { log "no bitcoind RPC port in $dir/bitcoind/rpc.port"; return 1; }
  python3 - "$url" "$(btc_cookie "$dir")" "$method" "$params" <<'PY'
import base64, json, sys, urllib.error, urllib.request
url, cookie, method, params = sys.argv[1:5]
try:
    with open(cookie) as f:
        auth = base64.b64encode(f.read().strip().encode()).decode()
except OSError as e:
    sys.exit(f"btc_rpc: cannot read the cookie: {e}")
body = json.dumps({"jsonrpc": "1.0", "id": "p2pstore", "method": method,
                   "params": json.loads(params)}).encode()
req = urllib.request.Request(url, body, {"Content-Type": "application/json",
                                         "Authorization": "Basic " + auth})
try:
    with urllib.request.urlopen(req, timeout=60) as r:
        reply = json.load(r)
except urllib.error.HTTPError as e:
    try:
        reply = json.load(e)  # bitcoind reports RPC errors with HTTP 404/500
    except Exception:
        sys.exit(f"btc_rpc {method}: HTTP {e.code} {e.reason}")
except (OSError, ValueError) as e:
    sys.exit(f"btc_rpc {method}: {e}")
if reply.get("error"):
    sys.exit(f"btc_rpc {method}: {reply['error'].get('message')} (code {reply['error'].get('code')})")
res = reply.get("result")
print(res if isinstance(res, str) else json.dumps(res))
PY
}

# bitcoind_pid DIR: prints the pid of the bitcoind running for DIR (checked
# against its command line, so a recycled pid is never taken for it).
bitcoind_pid() {
  local bdir pid
  bdir=$(cd "$1" 2>/dev/null && pwd)/bitcoind || return 1
  [[ -s $bdir/bitcoind.pid ]] || return 1
  pid=$(cat "$bdir/bitcoind.pid")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/cmdline ]]; then
    tr '\0' '\n' < "/proc/$pid/cmdline" | grep -qxF -- "-datadir=$bdir" || return 1
  fi
  printf '%s\n' "$pid"
}

# stop_bitcoind DIR: SIGTERM the bitcoind of DIR by its pid file, SIGKILL
# after 30 s. Does nothing if it is not running.
stop_bitcoind() {
  local dir=$1 pid i
  pid=$(bitcoind_pid "$dir") || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || { log "stopped bitcoind $pid"; return 0; }
    sleep 0.1
  done
  log "bitcoind $pid did not stop; killing"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/bitcoind/bitcoind.pid"
}

# daemon_running DATADIR: true if the p2pstored of DATADIR is alive.
daemon_running() {
  [[ -s $1/p2pstored.pid ]] && kill -0 "$(cat "$1/p2pstored.pid")" 2>/dev/null
}

# start_bitcoind DIR BITCOIND: starts BITCOIND -regtest detached, datadir
# DIR/bitcoind (never ~/.bitcoin), RPC and P2P on free 127.0.0.1 ports
# (P2P not listening), pid in DIR/bitcoind/bitcoind.pid, and waits (60 s at
# most) until its RPC answers. Every daemon of the network shares it: its
# default RPC queue (16 requests, 4 threads) overflows with HTTP 503 under
# scripts/scale.sh's hundreds of wallets, hence the larger queue.
start_bitcoind() {
  local dir=$1 exe=$2 bdir rpc_port launched deadline
  bdir=$(mkdir -p "$dir/bitcoind" && cd "$dir/bitcoind" && pwd)
  rpc_port=$(free_port)
  echo "$rpc_port" > "$bdir/rpc.port"
  rm -f "$bdir/bitcoind.pid"
  setsid "$exe" -regtest -datadir="$bdir" -pid="$bdir/bitcoind.pid" \
    -server -rpcport="$rpc_port" -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 \
    -port="$(free_port)" -listen=0 -txindex=0 -fallbackfee=0.0002 \
    -rpcworkqueue=512 -rpcthreads=8 -printtoconsole=0 >>"$bdir/bitcoind.log" 2>&1 < /dev/null &
  launched=$!
  log "bitcoind: starting $exe (RPC http://127.0.0.1:$rpc_port, datadir $bdir)"
  deadline=$((SECONDS + 60))
  until btc_rpc "$dir" getblockcount >/dev/null 2>&1; do
    if ! kill -0 "$launched" 2>/dev/null && ! bitcoind_pid "$dir" >/dev/null; then
      tail -n 20 "$bdir/bitcoind.log" "$bdir/regtest/debug.log" >&2 2>/dev/null || true
      die "bitcoind exited during startup (logs: $bdir/bitcoind.log, $bdir/regtest/debug.log)"
    fi
    ((SECONDS < deadline)) || die "bitcoind RPC not ready after 60 s (log: $bdir/regtest/debug.log)"
    sleep 0.2
  done
  wait_for_file "$bdir/bitcoind.pid" 10 || die "bitcoind wrote no pid file $bdir/bitcoind.pid"
  log "bitcoind: pid $(cat "$bdir/bitcoind.pid"), height $(btc_rpc "$dir" getblockcount)"
}

# find_bitcoind: prints the bitcoind that scripts/install-bitcoind.sh picks
# (building it the first time). install-bitcoind.sh checks a bitcoind with
# `bitcoind -version`, which (Bitcoin Core quirk) creates ~/.bitcoin/settings.json
# and ~/.bitcoin/wallets/; so it runs here with HOME pointing at a scratch dir,
# keeping the real cache, cargo and rustup dirs, and ~/.bitcoin is never touched.
find_bitcoind() {
  local scratch exe rc=0
  # Resolved from the real HOME first (prefix assignments see earlier ones).
  local cache=${XDG_CACHE_HOME:-$HOME/.cache} cargo=${CARGO_HOME:-$HOME/.cargo} rustup=${RUSTUP_HOME:-$HOME/.rustup}
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/p2pstore-home.XXXXXX")
  exe=$(XDG_CACHE_HOME=$cache CARGO_HOME=$cargo RUSTUP_HOME=$rustup HOME=$scratch \
    "$ROOT/scripts/install-bitcoind.sh" | tail -1) || rc=$?
  rm -rf "$scratch"
  [[ $rc -eq 0 && -x $exe ]] || die "scripts/install-bitcoind.sh found no bitcoind"
  printf '%s\n' "$exe"
}

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 0.5 s until it
# succeeds; fails (with a message naming WHAT) after SECONDS.
wait_until() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < deadline)) || { log "timed out after $secs s waiting for $what"; return 1; }
    sleep 0.5
  done
}

# wallet_balance DATADIR: prints "CONFIRMED UNCONFIRMED IMMATURE" (sat) of
# the wallet of the daemon in DATADIR.
wallet_balance() {
  cli --datadir "$1" wallet balance --json |
    python3 -c 'import json,sys; b=json.load(sys.stdin); print(b["confirmed_sat"], b["unconfirmed_sat"], b["immature_sat"])'
}
