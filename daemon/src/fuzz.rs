//! Entry points for the cargo-fuzz targets (daemon/fuzz, run by
//! scripts/fuzz.sh): each hands arbitrary bytes to one decoder exactly as
//! the daemon does, then checks what must hold of whatever it accepted.
//! Only with the `fuzz` feature; a panic here is a finding.

use std::sync::LazyLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::audit;
use crate::client::manifest::Manifest;
use crate::contracts::Contract;
use crate::ids::ShardId;
use crate::merkle;
use crate::network::codec;
use crate::protocol::{
    AuditAnswer, Challenge, ControlRequest, ControlResponse, MAX_CONTROL_MESSAGE,
    MAX_SHARD_MESSAGE, ShardRequest, ShardResponse,
};

/// A message the codec accepted encodes within the limit and decodes back
/// to the same encoding: what a node answers or forwards is what it read.
fn round_trip<M: Serialize + DeserializeOwned>(msg: &M, max: u64) {
    let Ok(once) = codec::encode(msg, max) else {
        // Only a message near the limit may grow past it on re-encoding
        // (a shorter integer form read back longer); none is relayed.
        return;
    };
    let again: M = match codec::decode(&once) {
        Ok(m) => m,
        Err(e) => panic!("our own encoding does not decode: {e}"),
    };
    let twice = codec::encode(&again, max).ok();
    assert_eq!(Some(once), twice, "encoding is not stable");
}

/// Control-protocol bytes, read as a provider reads a request and as a
/// client reads an answer.
pub fn control(data: &[u8]) {
    if let Ok(m) = codec::decode::<ControlRequest>(data) {
        round_trip(&m, MAX_CONTROL_MESSAGE);
    }
    if let Ok(m) = codec::decode::<ControlResponse>(data) {
        round_trip(&m, MAX_CONTROL_MESSAGE);
    }
}

/// Shard-protocol bytes, both ways.
pub fn shard(data: &[u8]) {
    if let Ok(m) = codec::decode::<ShardRequest>(data) {
        round_trip(&m, MAX_SHARD_MESSAGE);
    }
    if let Ok(m) = codec::decode::<ShardResponse>(data) {
        round_trip(&m, MAX_SHARD_MESSAGE);
    }
}

/// The shard every audit input is judged against: 20 KiB, so its tree has
/// several levels and a short last leaf.
struct Audited {
    data: Vec<u8>,
    id: ShardId,
}

static AUDITED: LazyLock<Audited> = LazyLock::new(|| {
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let id = ShardId::of(&data);
    Audited { data, id }
});

/// An audit answer from a (hostile) provider, decoded as the client does
/// and judged against challenges of a known shard: whatever passes must
/// carry the shard's real bytes. A forged proof that passes is a finding.
pub fn audit(data: &[u8]) {
    let shard = &*AUDITED;
    let size = shard.data.len() as u64;
    let leaves = merkle::leaf_count(size);
    let Ok(ControlResponse::Audited { answers }) = codec::decode::<ControlResponse>(data) else {
        return;
    };
    for (i, answer) in answers.iter().enumerate() {
        // Challenge every leaf in turn, and some past the end.
        let leaf = (i as u64 % (leaves + 2)) as u32;
        let c = Challenge {
            shard_id: shard.id,
            leaf,
        };
        if audit::proves(&c, answer, Some(size)) {
            let AuditAnswer::Proof { leaf: bytes, .. } = answer else {
                panic!("a missing shard proved a challenge");
            };
            let range = merkle::leaf_range(size, leaf as u64).expect("a proven leaf exists");
            assert_eq!(
                bytes.as_slice(),
                &shard.data[range.start as usize..range.end as usize],
                "a proof passed with bytes that are not the shard's"
            );
        }
        assert!(
            !audit::proves(&c, answer, None),
            "a proof passed for a shard the client does not know"
        );
    }
}

/// A stored manifest as the client reads it: decoded, then validated
/// before any use.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = crate::db::decode::<Manifest>(data) {
        let _ = m.validate();
    }
}

/// A stored contract, either side, as both read it.
pub fn contract(data: &[u8]) {
    if let Ok(c) = crate::db::decode::<Contract>(data) {
        let _ = c.is_live();
    }
}

/// A stored payment intent as start-up reads it.
pub fn payment_intent(data: &[u8]) {
    let _ = crate::client::read_intent_record(data);
}

/// A node with no account yet and its RPC module, built once.
struct RpcTarget {
    runtime: tokio::runtime::Runtime,
    module: jsonrpsee::RpcModule<crate::rpc::RpcImpl>,
    _dir: tempfile::TempDir,
}

static RPC: LazyLock<RpcTarget> = LazyLock::new(|| {
    use clap::Parser;
    use p2pstore_rpc::P2pstoreApiServer as _;
    let dir = tempfile::tempdir().expect("a temp dir for the fuzzed node");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let args = crate::config::Args::parse_from([
        "p2pstored".as_ref(),
        "--datadir".as_ref(),
        dir.path().as_os_str(),
    ]);
    let cfg = crate::config::Config::load(args).expect("the default config");
    let (node, _) = runtime
        .block_on(crate::node::Node::start(cfg))
        .expect("a node with no account");
    let module = crate::rpc::RpcImpl::new(node, Default::default()).into_rpc();
    RpcTarget {
        runtime,
        module,
        _dir: dir,
    }
});

/// A JSON-RPC request body, through jsonrpsee's parsing and the daemon's
/// own checks of every parameter, to a node with no account (each method
/// gets as far as the node). `init`, which would create an account, is
/// left out.
pub fn rpc_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let calls_init =
        |v: &serde_json::Value| v.get("method").and_then(|m| m.as_str()) == Some("init");
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(batch)) if batch.iter().any(calls_init) => return,
        Ok(v) if calls_init(&v) => return,
        _ => {}
    }
    let target = &*RPC;
    let _ = target
        .runtime
        .block_on(target.module.raw_json_request(text, 1));
}

/// The targets, by name (daemon/fuzz/fuzz_targets/<name>.rs).
pub const TARGETS: [&str; 7] = [
    "control",
    "shard",
    "audit",
    "manifest",
    "contract",
    "payment_intent",
    "rpc_request",
];

/// Valid inputs of each target, for its first corpus: the fuzzer starts
/// from real messages and records instead of discovering CBOR and JSON.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    use crate::ids::ContractId;
    use crate::protocol::{Offer, Proposal};
    let contract_id = ContractId::from_bytes([7; 32]);
    let shard = &*AUDITED;
    let tree = merkle::Tree::build(&shard.data);
    let proof = |leaf: u64| {
        let range = merkle::leaf_range(shard.data.len() as u64, leaf).expect("a leaf");
        AuditAnswer::Proof {
            leaf: shard.data[range.start as usize..range.end as usize].to_vec(),
            path: tree.proof(leaf),
        }
    };
    match target {
        "control" => vec![
            cbor(&ControlRequest::GetOffer),
            cbor(&ControlRequest::Propose(Proposal {
                contract_id,
                add_bytes: 1 << 20,
                price_sat_per_gib_month: 1000,
                period_blocks: 144,
                term_end_height: 5000,
            })),
            cbor(&ControlRequest::Delete {
                contract_id,
                shard_ids: vec![shard.id],
            }),
            cbor(&ControlRequest::List {
                contract_id,
                after: Some(shard.id),
            }),
            cbor(&ControlRequest::Audit {
                contract_id,
                challenges: vec![Challenge {
                    shard_id: shard.id,
                    leaf: 1,
                }],
            }),
            cbor(&ControlResponse::Offer(Offer {
                protocol_version: 4,
                free_bytes: 1 << 30,
                price_sat_per_gib_month: 1000,
                min_term_blocks: 144,
                max_term_blocks: 52_560,
                max_shard_bytes: 1 << 20,
            })),
            cbor(&ControlResponse::Deleted { count: 1, bytes: 9 }),
            cbor(&ControlResponse::Listed {
                shards: vec![(shard.id, 9)],
                more: true,
            }),
        ],
        "shard" => vec![
            cbor(&ShardRequest::Store {
                contract_id,
                shard_id: shard.id,
                data: shard.data[..64].to_vec().into(),
            }),
            cbor(&ShardRequest::Fetch { shard_id: shard.id }),
            cbor(&ShardResponse::Data(shard.data[..64].to_vec())),
        ],
        "audit" => vec![
            cbor(&ControlResponse::Audited {
                answers: (0..merkle::leaf_count(shard.data.len() as u64))
                    .map(proof)
                    .collect(),
            }),
            cbor(&ControlResponse::Audited {
                answers: vec![AuditAnswer::Missing, proof(0)],
            }),
        ],
        "manifest" => vec![serde_json::to_vec(&Manifest::sample()).expect("json")],
        "contract" => vec![serde_json::to_vec(&Contract::sample()).expect("json")],
        "payment_intent" => vec![crate::client::sample_intent_record()],
        "rpc_request" => [
            r#"{"jsonrpc":"2.0","id":1,"method":"status","params":[]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"put","params":{"path":"/tmp/a","redundancy":"2/4","keep":true,"op_id":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"put","params":["/tmp/a","medium",100,null,false,null]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"get","params":{"file_id":"00","dest":"/tmp/b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"stat","params":["1e5f02b438a0d6ef"]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"rm","params":{"file_id":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"repair","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"wallet_send","params":{"address":"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080","amount_sat":1000}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"wallet_budget","params":[12]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"progress","params":["op"]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"unlock","params":{"password":"pw"}}"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        _ => Vec::new(),
    }
}

/// A seed message's wire encoding.
fn cbor<M: Serialize>(msg: &M) -> Vec<u8> {
    codec::encode(msg, u64::MAX).expect("a seed encodes")
}
