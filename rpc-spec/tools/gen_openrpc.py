#!/usr/bin/env python3
"""Writes rpc-spec/openrpc.json. The doc is kept as data here so that adding a
method is one entry; the daemon's test `openrpc_matches_trait` checks the
result against the Rust trait and error-code table."""
import json, pathlib

S = {"type": "string"}
U64 = {"type": "integer", "minimum": 0}
U32 = {"type": "integer", "minimum": 0, "maximum": 4294967295}
STRS = {"type": "array", "items": S}
def obj(props, required=None, nullable=()):
    p = {}
    for k, v in props.items():
        p[k] = {"oneOf": [v, {"type": "null"}]} if k in nullable else v
    return {"type": "object", "properties": p, "required": required if required is not None else [k for k in props if k not in nullable]}
def ref(n): return {"$ref": f"#/components/schemas/{n}"}
def param(name, schema, required=True, desc=None):
    d = {"name": name, "required": required, "schema": schema}
    if desc: d["description"] = desc
    return d

schemas = {
  "InitResult": obj({"mnemonic": S, "peer_id": S}, nullable=("mnemonic",)),
  "UnlockResult": obj({"peer_id": S}),
  "PutResult": obj({"file_id": S, "name": S, "size": U64, "segments": U64, "redundancy": S, "providers": STRS}),
  "Health": obj({"good": U32, "needed": U32, "total": U32}),
  "SegmentHealth": obj({"index": U64, "good": U32, "needed": U32, "total": U32}),
  "FileStat": obj({"file_id": S, "name": S, "size": U64, "created_at": U64, "redundancy": S, "providers": STRS,
                   "health": ref("Health"), "segments": {"type": "array", "items": ref("SegmentHealth")}}),
  "RepairResult": obj({"files_checked": U64, "segments_repaired": U64, "shards_rebuilt": U64, "unrecoverable_segments": U64,
                       "new_providers": STRS, "txid": S}, nullable=("txid",)),
  "GetResult": obj({"file_id": S, "path": S, "size": U64}),
  "FileEntry": obj({"file_id": S, "name": S, "size": U64, "created_at": U64, "segments": U64, "providers": STRS,
                    "redundancy": S, "health": ref("Health")}),
  "RmResult": obj({"file_id": S, "deleted_shards": U64, "unreachable_providers": STRS}),
  "Status": obj({"state": {"type": "string", "enum": ["uninitialized", "locked", "running"]}, "peer_id": S, "listen_addrs": STRS,
                 "dht_peers": U64, "connected_peers": U64, "roles": STRS, "stored_bytes": U64, "capacity_bytes": U64,
                 "free_bytes": U64, "files": U64, "network": S, "tip_height": U32, "bitcoind_error": S},
                nullable=("peer_id", "network", "tip_height", "bitcoind_error")),
  "ProviderInfo": obj({"peer_id": S, "addrs": STRS, "free_bytes": U64, "price_sat_per_gib_month": U64,
                       "min_term_blocks": U32, "max_term_blocks": U32, "protocol_version": U32}),
  "WalletBalance": obj({"confirmed_sat": U64, "unconfirmed_sat": U64, "immature_sat": U64}),
  "AddressResult": obj({"address": S}),
  "SendResult": obj({"txid": S}),
  "WalletTx": obj({"txid": S, "received_sat": U64, "sent_sat": U64, "fee_sat": U64, "confirmations": U32, "height": U32},
                  nullable=("fee_sat", "height")),
  "ContractInfo": obj({"contract_id": S, "role": {"type": "string", "enum": ["client", "provider"]}, "peer_id": S, "file_id": S,
                       "shards": U64, "bytes": U64, "amount_sat": U64, "price_sat_per_gib_month": U64, "term_blocks": U32,
                       "payout_address": S, "txid": S, "vout": U32,
                       "state": {"type": "string", "enum": ["accepted", "paid", "active", "rejected", "expired_unpaid", "deleted", "lost"]},
                       "deadline_height": U32, "expiry_height": U32}, nullable=("file_id", "txid", "vout", "expiry_height")),
  "Progress": obj({"done_bytes": U64, "total_bytes": U64, "finished": {"type": "boolean"}}),
}

OP = param("op_id", S, False, "Caller-chosen id; `progress` reports on it while the call runs.")
methods = [
  ("init", "Create the account keystore: a new BIP39 mnemonic (returned once), or restore `mnemonic`.",
   [param("password", S), param("mnemonic", S, False)], ref("InitResult")),
  ("unlock", "Decrypt the keystore with `password` and start the node.", [param("password", S)], ref("UnlockResult")),
  ("put", "Encrypt, erasure-code and store the file at `path` (a path on the daemon's machine) with providers found in the DHT, and pay them in one transaction.",
   [param("path", S), param("redundancy", S, False, "low (1 copy), medium (2-of-4), high (3-of-9) or K/N; default from config"), OP], ref("PutResult")),
  ("stat", "A file's health: valid shards over needed shards, every segment, worst first.", [param("file_id", S)], ref("FileStat")),
  ("repair", "Rebuild lost or corrupt shards at new providers under new paid contracts; one file, or all.", [param("file_id", S, False)], ref("RepairResult")),
  ("get", "Fetch, verify and decrypt a file into `dest`; nothing is written at `dest` unless every byte verified.",
   [param("file_id", S), param("dest", S), OP], ref("GetResult")),
  ("ls", "Files this account has stored, with their health.", [], {"type": "array", "items": ref("FileEntry")}),
  ("rm", "Delete a file's shards at its providers, then forget the file.", [param("file_id", S)], ref("RmResult")),
  ("status", "Node identity, network and storage state.", [], ref("Status")),
  ("providers", "Providers the DHT knows now, each with the offer it just gave.", [], {"type": "array", "items": ref("ProviderInfo")}),
  ("progress", "Progress of a put or get started with `op_id`; null when unknown.", [param("op_id", S)], {"oneOf": [ref("Progress"), {"type": "null"}]}),
  ("wallet_balance", "Wallet balance in sats.", [], ref("WalletBalance")),
  ("wallet_address", "A fresh receive address of this node's wallet.", [], ref("AddressResult")),
  ("wallet_send", "Send `amount_sat` to `address`; returns the txid.", [param("address", S), param("amount_sat", U64)], ref("SendResult")),
  ("wallet_txs", "Wallet transactions, unconfirmed first.", [], {"type": "array", "items": ref("WalletTx")}),
  ("contracts", "Storage contracts on both sides: as client (what we pay for) and as provider (what we are paid for).", [],
   {"type": "array", "items": ref("ContractInfo")}),
  ("rpc.discover", "This document.", [], {"type": "object"}),
]

import re
codes_rs = (pathlib.Path(__file__).parent.parent / "src" / "codes.rs").read_text()
consts = dict((n, int(v)) for n, v in re.findall(r"pub const (\w+): i32 = (-?\d+);", codes_rs))
errors = {n: {"code": c, "message": n.replace("_", " ").lower()} for n, c in consts.items()}

doc = {
  "openrpc": "1.2.6",
  "info": {"title": "p2pstored JSON-RPC", "version": "0.1.0",
           "description": "Control API of the p2pstore daemon. HTTP and WebSocket on one port (127.0.0.1 by default). Every request needs `Authorization: Bearer <token>` with the token from `<datadir>/.cookie`; without it the server answers HTTP 401. Amounts are integer sats in fields ending `_sat`."},
  "methods": [{"name": n, "summary": s, "params": p, "result": {"name": n + "_result", "schema": r},
               "paramStructure": "either"} for n, s, p, r in methods],
  "components": {"schemas": schemas, "errors": errors},
}
out = pathlib.Path(__file__).parent.parent / "openrpc.json"
out.write_text(json.dumps(doc, indent=2) + "\n")
print(f"wrote {out}")
