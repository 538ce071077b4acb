#!/usr/bin/env bash
# README's first command: starts a local network that pays in regtest
# bitcoin (scripts/regtest-up.sh: bitcoind, bootstrap node, 4 providers, a
# client with coins), stores a 16 MiB random file (the client pays the
# provider for it), shows the contracts, the budget of the coming periods
# and both wallets, mines a block, fetches the file back and checks it is
# byte-identical. Leaves the network
# running so you can keep using it; scripts/regtest-down.sh stops it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DIR=$DEFAULT_NET_DIR
usage() {
  cat <<EOF
usage: $0 [DIR | --dir DIR]

Runs the p2pstore demo in DIR (default $DEFAULT_NET_DIR), which is wiped
first. Needs bitcoind (scripts/install-bitcoind.sh finds or builds it) and
builds the release binaries if they are missing. All on 127.0.0.1.
EOF
}
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) DIR=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) DIR=$1; shift ;;
  esac
done

section() { printf '\n== %s\n' "$*"; }

section "start a regtest network: bitcoind, bootstrap node, 4 providers, a client with coins"
"$ROOT/scripts/regtest-down.sh" --dir "$DIR" 2>/dev/null || true
rm -rf "$DIR"
"$ROOT/scripts/regtest-up.sh" --providers 4 --dir "$DIR"
DIR=$(cd "$DIR" && pwd)
ensure_bins
export P2PSTORE_DATADIR=$DIR/client
on_exit() {
  (($? == 0)) || log "demo failed; logs: $DIR/*/p2pstored.log, $DIR/bitcoind/regtest/debug.log; stop with: scripts/regtest-down.sh --dir $DIR"
}
trap on_exit EXIT

sum() { local s=0 v; for v in "$@"; do s=$((s + v)); done; echo "$s"; }
# Wallet balances in sat: total = confirmed + unconfirmed (immature coinbase left out).
total_of() { local c u; read -r c u _ < <(wallet_balance "$1") || return 1; echo $((c + u)); }
confirmed_of() { local c; read -r c _ _ < <(wallet_balance "$1") || return 1; echo "$c"; }

section "client wallet"
cli wallet balance
client0=$(total_of "$DIR/client")
declare -A p_total0 p_conf0 peer_dir
for d in "$DIR"/provider-*; do
  p_total0[$d]=$(total_of "$d")
  p_conf0[$d]=$(confirmed_of "$d")
  peer_dir[$(cli --datadir "$d" status --json | json_field peer_id)]=$d
done

section "put a 16 MiB random file, 2-of-4 erasure coded (the client pays every provider in one transaction)"
head -c $((16 << 20)) /dev/urandom > "$DIR/demo.bin"
put_json=$(timeout --foreground 300 "$P2PSTORE_CLI" --json put "$DIR/demo.bin")
file_id=$(json_field file_id <<< "$put_json")
mapfile -t peers < <(json_field providers <<< "$put_json")
holders=()
for p in "${peers[@]}"; do
  [[ -n ${peer_dir[$p]:-} ]] || die "put names provider $p, which is not in $DIR"
  holders+=("${peer_dir[$p]}")
done
names=$(for d in "${holders[@]}"; do basename "$d"; done | paste -sd, | sed 's/,/, /g')
echo "file id:   $file_id"
echo "stored at: $names"

section "contracts, as the client sees them"
cli contracts
for d in "${holders[@]}"; do
  section "contracts, as $(basename "$d") sees them"
  cli --datadir "$d" contracts
done

section "what the next periods will cost"
cli wallet budget

# The payment is in the mempool: wait until both wallets have seen it.
client_paid() { (($(total_of "$DIR/client") < client0)); }
provider_paid() { local before=${p_total0[$1]}; (($(total_of "$1") > before)); }
wait_until 60 "the client's wallet to show the payment" client_paid
for d in "${holders[@]}"; do
  wait_until 60 "$(basename "$d")'s wallet to see the payment" provider_paid "$d"
done

paid=$((client0 - $(total_of "$DIR/client")))
received=()
for d in "${holders[@]}"; do
  before=${p_total0[$d]}
  received+=($(($(total_of "$d") - before)))
done
received_total=$(sum "${received[@]}")
# A fresh network: every client-side contract is this put's.
contract_sat=$(cli --json contracts | python3 -c '
import json, sys
print(sum(c["paid_sat"] for c in json.load(sys.stdin) if c["role"] == "client"))')

section "audit: each provider proves random leaves of its shards (Merkle paths)"
audit_json=$(cli --json audit "$file_id")
cli audit "$file_id"
echo "$audit_json" | python3 -c '
import json, sys
r = json.load(sys.stdin)
bad = [p for p in r if p["failed"] or p["unknown"] or p["passed"] == 0]
sys.exit(f"audit found trouble: {bad}" if bad else 0)' || die "the audit of a fresh file did not pass"

section "file health (from that audit): any 2 of each segment's 4 shards rebuild it"
cli stat "$file_id"

section "wallets after the put (payment unconfirmed)"
echo "client:"
cli wallet balance
for d in "${holders[@]}"; do
  echo "$(basename "$d"):"
  cli --datadir "$d" wallet balance
done
echo "client paid $paid sat = $received_total to the provider(s) + $((paid - received_total)) fee; contracts say $contract_sat sat"
((received_total == contract_sat)) || die "the provider(s) received $received_total sat, but the contracts say $contract_sat sat"

section "mine 1 block"
"$ROOT/scripts/mine.sh" 1 --dir "$DIR" --to "$BURN_ADDRESS"
provider_confirmed() { local before=${p_conf0[$1]}; (($(confirmed_of "$1") >= before + $2)); }
for i in "${!holders[@]}"; do
  d=${holders[$i]}
  wait_until 60 "$(basename "$d")'s payment to confirm" provider_confirmed "$d" "${received[$i]}"
  echo "$(basename "$d"):"
  cli --datadir "$d" wallet balance
done

section "get it back"
rm -f "$DIR/demo.out"
timeout --foreground 300 "$P2PSTORE_CLI" get "$file_id" -o "$DIR/demo.out"
cmp "$DIR/demo.bin" "$DIR/demo.out"
echo "byte-identical: yes"

section "summary"
cat <<MSG
  stored:    16 MiB as $file_id at $names
  audited:   every shard's random leaves proven by each provider
  paid:      $paid sat by the client = $received_total sat to the provider(s) + $((paid - received_total)) sat fee (contract: $contract_sat sat)
  confirmed: after 1 block, the provider's confirmed balance is up by $received_total sat
  get:       byte-identical

The network is still running in $DIR:
  export P2PSTORE_DATADIR=$DIR/client; $P2PSTORE_CLI contracts
  $P2PSTORE_CLI dashboard                # a one-time link to the web dashboard
  $P2PSTORE_CLI events                   # follow what happens, live
  scripts/mine.sh 1 --dir $DIR         # mine a block
  scripts/regtest-down.sh --dir $DIR   # stop it all
MSG
