# Shared helpers for the p2pstore scripts. Sourced, not run.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEFAULT_NET_DIR="${TMPDIR:-/tmp}/p2pstore-localnet"

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Binaries: $P2PSTORED / $P2PSTORE_CLI, else release builds of this checkout.
ensure_bins() {
  P2PSTORED=${P2PSTORED:-$ROOT/target/release/p2pstored}
  P2PSTORE_CLI=${P2PSTORE_CLI:-$ROOT/target/release/p2pstore-cli}
  if [[ ! -x $P2PSTORED || ! -x $P2PSTORE_CLI || -n ${P2PSTORE_REBUILD:-} ]]; then
    log "building release binaries..."
    (cd "$ROOT" && cargo build --release --bin p2pstored --bin p2pstore-cli >&2) || die "cargo build failed"
  fi
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
  wait_for_file "$dir/rpc.addr" 60 || { tail -20 "$dir/p2pstored.log" >&2; die "p2pstored in $dir did not start"; }
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
