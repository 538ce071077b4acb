#!/usr/bin/env bash
# Mines N regtest blocks on the bitcoind that scripts/regtest-up.sh started:
# to a fresh address of the client's wallet when the client is running, else
# to a fixed address nobody holds the key of (or to --to ADDRESS).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

N=
DIR=$DEFAULT_NET_DIR
TO=
usage() {
  cat <<EOF
usage: $0 N [--dir DIR] [--to ADDRESS]

Mines N blocks (generatetoaddress) on the regtest bitcoind of DIR (default
$DEFAULT_NET_DIR) and prints the new height. The coinbase goes to ADDRESS,
else to a fresh address of the client's wallet (DIR/client) if it is running,
else to $BURN_ADDRESS.
EOF
}
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) DIR=${2:?}; shift 2 ;;
    --to) TO=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) [[ -z $N ]] || { usage >&2; exit 2; }; N=$1; shift ;;
  esac
done
[[ $N =~ ^[0-9]+$ && $N -ge 1 ]] || { usage >&2; exit 2; }
[[ -d $DIR ]] || die "no network in $DIR"
DIR=$(cd "$DIR" && pwd)
bitcoind_pid "$DIR" > /dev/null || die "no bitcoind running in $DIR/bitcoind (scripts/regtest-up.sh --dir $DIR)"

if [[ -z $TO ]]; then
  TO=$BURN_ADDRESS
  if daemon_running "$DIR/client"; then
    ensure_bins
    if a=$(cli --datadir "$DIR/client" wallet address --json 2>/dev/null | json_field address 2>/dev/null); then
      TO=$a
    else
      log "the client gave no wallet address; mining to $BURN_ADDRESS"
    fi
  fi
fi
btc_rpc "$DIR" generatetoaddress "[$N, \"$TO\"]" > /dev/null
echo "mined $N block(s) to $TO; height $(btc_rpc "$DIR" getblockcount)"
