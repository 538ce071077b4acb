#!/usr/bin/env bash
# Starts a local p2pstore network that pays in regtest bitcoin: its own
# bitcoind (-regtest, datadir DIR/bitcoind, free loopback ports), then
# localnet-up.sh pointed at it, then mines 101 blocks to the client's wallet
# so a put can be paid for at once. scripts/regtest-down.sh stops it all.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PROVIDERS=4
DIR=$DEFAULT_NET_DIR
usage() {
  cat <<EOF
usage: $0 [--providers N] [--dir DIR]

Starts bitcoind -regtest in DIR/bitcoind (never ~/.bitcoin), a bootstrap node,
N providers (default 4) and a client in DIR (default $DEFAULT_NET_DIR), all on
127.0.0.1 with free ports; mines 101 blocks to the client's wallet and waits
until the client sees a confirmed balance. bitcoind comes from
scripts/install-bitcoind.sh (\$BITCOIND_EXE, PATH, or the cached build).
Stop everything with: scripts/regtest-down.sh --dir DIR
EOF
}
while [[ $# -gt 0 ]]; do
  case $1 in
    --providers) PROVIDERS=${2:?}; shift 2 ;;
    --dir) DIR=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $PROVIDERS =~ ^[0-9]+$ ]] || die "--providers takes a number"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
BDIR=$DIR/bitcoind

# Refuse to start over a running network (and so never stop one on failure).
if pid=$(bitcoind_pid "$DIR"); then
  die "bitcoind $pid is already running in $BDIR (scripts/regtest-down.sh --dir $DIR)"
fi
for d in "$DIR"/*/; do
  if daemon_running "$d"; then
    die "a network is already running in $DIR (scripts/regtest-down.sh --dir $DIR)"
  fi
done

BITCOIND=$(find_bitcoind)
ensure_bins

# From here on, a failure stops whatever this run started (logs stay in DIR).
started=
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 && -n $started ]]; then
    log "regtest-up failed; stopping what it started (logs: $BDIR/regtest/debug.log, $DIR/*/p2pstored.log)"
    "$ROOT/scripts/localnet-down.sh" --dir "$DIR" >/dev/null 2>&1 || true
    stop_bitcoind "$DIR"
  fi
}
trap on_exit EXIT

# --- bitcoind ---------------------------------------------------------------
started=1
start_bitcoind "$DIR" "$BITCOIND"
RPC_URL=$(btc_rpc_url "$DIR")
COOKIE=$(btc_cookie "$DIR")
RPC_PORT=$(cat "$BDIR/rpc.port")

# --- p2pstore nodes ---------------------------------------------------------
"$ROOT/scripts/localnet-up.sh" --providers "$PROVIDERS" --dir "$DIR" \
  --bitcoind-rpc-url "$RPC_URL" --bitcoind-cookie "$COOKIE"

# --- coins for the client -----------------------------------------------------
# 101 blocks: the first coinbase is mature (100 confirmations) at once.
addr=$(cli --datadir "$DIR/client" wallet address --json | json_field address)
btc_rpc "$DIR" generatetoaddress "[101, \"$addr\"]" > /dev/null
log "mined 101 blocks to the client ($addr); height $(btc_rpc "$DIR" getblockcount)"
log "waiting for the client's wallet to see a confirmed balance..."
confirmed=0
for ((t = 0; t < 120; t++)); do
  confirmed=$(cli --datadir "$DIR/client" wallet balance --json | json_field confirmed_sat) || confirmed=0
  [[ $confirmed =~ ^[0-9]+$ && $confirmed -gt 0 ]] && break
  sleep 1
done
[[ $confirmed =~ ^[0-9]+$ && $confirmed -gt 0 ]] ||
  die "the client's wallet shows no confirmed balance 120 s after mining (log: $DIR/client/p2pstored.log)"
started=

BITCOIN_CLI=$(dirname "$BITCOIND")/bitcoin-cli
cat <<MSG

bitcoind (regtest) is up: $RPC_URL
  datadir: $BDIR   cookie: $COOKIE
  log:     $BDIR/regtest/debug.log
  client wallet: $confirmed sat confirmed

Mine blocks (to the client's wallet):  scripts/mine.sh 1 --dir $DIR
Talk to bitcoind:  (source $ROOT/scripts/lib.sh; btc_rpc $DIR getblockchaininfo)
MSG
if [[ -x $BITCOIN_CLI ]]; then
  echo "           or:  $BITCOIN_CLI -regtest -datadir=$BDIR -rpcport=$RPC_PORT getblockchaininfo"
fi
echo "Stop everything (nodes and bitcoind):  scripts/regtest-down.sh --dir $DIR"
