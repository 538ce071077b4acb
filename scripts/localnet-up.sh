#!/usr/bin/env bash
# Starts a local p2pstore network on loopback: a bootstrap node (a plain
# Kademlia seed; with --rendezvous it also serves rendezvous), N providers
# and one client, each with its own data dir under DIR, and waits until
# the client sees every provider in the DHT. With
# --bitcoind-rpc-url/--bitcoind-cookie every node but the bootstrap one uses
# that bitcoind for its wallet (scripts/regtest-up.sh starts one and passes them).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PROVIDERS=4
DIR=$DEFAULT_NET_DIR
CAPACITY=${P2PSTORE_CAPACITY:-4GiB}
BTC_URL=
BTC_COOKIE=
BOOT_ROLE=--seed
usage() { echo "usage: $0 [--providers N] [--dir DIR] [--rendezvous] [--bitcoind-rpc-url URL --bitcoind-cookie PATH]"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --providers) PROVIDERS=${2:?}; shift 2 ;;
    --dir) DIR=${2:?}; shift 2 ;;
    --rendezvous) BOOT_ROLE=--rendezvous-server; shift ;;
    --bitcoind-rpc-url) BTC_URL=${2:?}; shift 2 ;;
    --bitcoind-cookie) BTC_COOKIE=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ $PROVIDERS =~ ^[0-9]+$ ]] || die "--providers takes a number"
[[ -z $BTC_COOKIE || -n $BTC_URL ]] || die "--bitcoind-cookie needs --bitcoind-rpc-url"
# Wallet flags for every node with an account (not the bootstrap node).
BTC_ARGS=()
if [[ -n $BTC_URL ]]; then BTC_ARGS+=(--bitcoind-rpc-url "$BTC_URL"); fi
if [[ -n $BTC_COOKIE ]]; then BTC_ARGS+=(--bitcoind-cookie "$BTC_COOKIE"); fi
if [[ -z $BTC_URL ]]; then
  log "note: no --bitcoind-rpc-url, so the nodes use the daemon's default bitcoind; a put must be paid for,"
  log "      so for a network that can store files use scripts/regtest-up.sh (its own regtest bitcoind, funded client)"
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
for d in "$DIR"/*/; do
  [[ -f $d/p2pstored.pid ]] && kill -0 "$(cat "$d/p2pstored.pid")" 2>/dev/null && die "a network is already running in $DIR (scripts/localnet-down.sh --dir $DIR)"
done
ensure_bins

# The bootstrap node: fixed identity in its data dir.
port=$(free_port)
start_daemon "$DIR/bootstrap" "$BOOT_ROLE" --listen "/ip4/127.0.0.1/tcp/$port" --rpc-bind 127.0.0.1:0
boot_id=$(cli --datadir "$DIR/bootstrap" status --json | json_field peer_id)
BOOT="/ip4/127.0.0.1/tcp/$port/p2p/$boot_id"
echo "$BOOT" > "$DIR/bootstrap.addr"
log "bootstrap: $BOOT"

# start_node NAME EXTRA_ARGS...: a daemon with an account (created on first run).
start_node() {
  local name=$1; shift
  local dir=$DIR/$name
  mkdir -p "$dir"
  [[ -f $dir/password ]] || (umask 077; python3 -c 'import secrets; print(secrets.token_hex(16))' > "$dir/password")
  [[ -f $dir/p2p.port ]] || free_port > "$dir/p2p.port"
  start_daemon "$dir" --listen "/ip4/127.0.0.1/tcp/$(cat "$dir/p2p.port")" --rpc-bind 127.0.0.1:0 \
    --bootstrap "$BOOT" --password-file "$dir/password" ${BTC_ARGS[@]+"${BTC_ARGS[@]}"} "$@"
  if [[ $(cli --datadir "$dir" status --json | json_field state) == uninitialized ]]; then
    # A throwaway local account: its recovery phrase is not kept.
    cli --datadir "$dir" init --password-file "$dir/password" --json > /dev/null
  fi
}

for ((i = 1; i <= PROVIDERS; i++)); do
  start_node "provider-$i" --provider --capacity "$CAPACITY"
  log "provider-$i: $(cli --datadir "$DIR/provider-$i" status --json | json_field peer_id)"
done
start_node client
log "client: $(cli --datadir "$DIR/client" status --json | json_field peer_id)"

log "waiting for the client to see $PROVIDERS provider(s) in the DHT..."
seen=0
for ((t = 0; t < 120; t++)); do
  seen=$(cli --datadir "$DIR/client" providers --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [[ $seen -ge $PROVIDERS ]] && break
  sleep 1
done
[[ $seen -ge $PROVIDERS ]] || die "the client sees $seen of $PROVIDERS providers after 120 s; logs are in $DIR/*/p2pstored.log"

cat <<MSG
p2pstore localnet is up in $DIR
  bootstrap:  $DIR/bootstrap   ($BOOT)
$(for ((i = 1; i <= PROVIDERS; i++)); do echo "  provider-$i: $DIR/provider-$i"; done)
  client:     $DIR/client

Try:
  export P2PSTORE_DATADIR=$DIR/client
  $P2PSTORE_CLI status
  $P2PSTORE_CLI providers
  $P2PSTORE_CLI put README.md
  $P2PSTORE_CLI ls
  $P2PSTORE_CLI get <file_id> -o /tmp/readme.copy
MSG
if [[ -n $BTC_URL ]]; then
  cat <<MSG
  $P2PSTORE_CLI wallet balance
  $P2PSTORE_CLI contracts
MSG
fi
echo
echo "Stop it with: scripts/localnet-down.sh --dir $DIR"
