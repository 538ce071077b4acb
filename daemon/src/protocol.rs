//! Wire messages between p2pstore nodes, defined once.
//!
//! Two request-response protocols: `control` for small messages (offers,
//! deletes; later contracts and payment notices) and `shard` for shard bytes.
//! Separate protocols let each have its own size limit and timeout, so a peer
//! can never make us buffer a shard-sized control message.

use bdk_wallet::bitcoin::address::NetworkUnchecked;
use bdk_wallet::bitcoin::{Address, Txid};
use libp2p::identity::{Keypair, PublicKey};
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};

use crate::ids::{ContractId, RevisionId, ShardId};

/// 2: shard ids are Merkle roots, and `Audit` replaced `Check`.
/// 3: one contract per client–provider pair, revised by byte allowance
/// and paid period by period; proposals name no shards.
/// 4: Merkle trees hash with BLAKE3 (see `merkle`), so shard ids differ.
/// 5: `List` pages a contract's shards; a client prunes before each period.
pub const PROTOCOL_VERSION: u32 = 5;
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pstore/kad/1.0.0");
pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pstore/control/5.0.0");
pub const SHARD_PROTOCOL: StreamProtocol = StreamProtocol::new("/p2pstore/shard/5.0.0");
pub const RENDEZVOUS_NAMESPACE: &str = "p2pstore";
/// Prefix of the DHT keys providers announce themselves under. v2 keys
/// are SHA-256 multihashes, one per [`ProviderBucket`]; v1 was one raw
/// digest, which standard Kademlia nodes reject.
pub const PROVIDERS_KEY_LABEL: &[u8] = b"p2pstore/providers/v2/";
/// How many DHT keys providers are spread across. One key's records live
/// at the 20 nodes closest to it, and libp2p's Kademlia answers a lookup
/// with at most 20 providers per node, so a key shows little more than
/// 20 providers. 256 keys keep about 20 per key at 5,000 providers
/// (p2pstore-sim), while a client still fills its directory from a few
/// dozen lookups (README, "Discovery at scale").
pub const PROVIDER_BUCKETS: u16 = 256;
/// The multihash code of SHA2-256 and its digest length: standard
/// Kademlia keys are multihashes.
const MULTIHASH_SHA2_256: [u8; 2] = [0x12, 0x20];

/// Plaintext bytes per segment.
pub const SEGMENT_SIZE: usize = 4 * 1024 * 1024;
/// Largest shard a provider accepts: a sealed full segment plus headroom.
pub const MAX_SHARD_BYTES: u64 = SEGMENT_SIZE as u64 + 4096;
/// The largest control message is a `Delete` of [`MAX_DELETE_IDS`] ids.
/// Ids are CBOR byte strings (34 bytes), so it is about 680 kB: it fits, as
/// the test `largest_messages_fit_their_limits` checks.
pub const MAX_CONTROL_MESSAGE: u64 = 1024 * 1024;
/// At most this many shard ids per `Delete` request.
pub const MAX_DELETE_IDS: usize = 20_000;
/// At most this many shards per `Listed` page: an id (34 bytes) and a
/// size (at most 9) each, about 700 kB.
pub const MAX_LIST_SHARDS: usize = 16_000;
/// At most this many challenges per `Audit`. The answer is then at most
/// 64 leaves with their paths, about 300 kB, and a provider does at most
/// 64 positioned reads of one leaf and a few hashes each per request.
pub const MAX_AUDIT_CHALLENGES: usize = 64;
/// Audits a peer may send a minute, and at once. A client's background
/// round sends one per contract it has with a provider, and an explicit
/// audit of a whole 1 GiB file at 16 leaves per shard 64, which a client
/// paces to this rate. Past it a peer is refused (`RateLimited`) before its
/// request is queued, so one peer costs a provider at most 5 × 64 leaf
/// reads a second (about 1.4 MiB/s) and a flood never crowds out others.
pub const AUDITS_PER_MINUTE: std::num::NonZeroU32 = std::num::NonZeroU32::new(300).unwrap();
pub const AUDIT_BURST: std::num::NonZeroU32 = std::num::NonZeroU32::new(32).unwrap();
/// A shard message carries one shard plus a small CBOR envelope.
pub const MAX_SHARD_MESSAGE: u64 = MAX_SHARD_BYTES + 16 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    GetOffer,
    /// A client asks for more allowance on its contract with this
    /// provider, or to form one: answered with a [`Quote`], which the
    /// provider holds as a small record until it is paid or lapses.
    Propose(Proposal),
    /// The client paid: output `vout` of `txid` pays the contract's address,
    /// for a quoted revision or for the next period.
    PaymentNotice(PaymentNotice),
    /// Delete shards of a contract; only the contract's client may.
    Delete {
        contract_id: ContractId,
        shard_ids: Vec<ShardId>,
    },
    /// The shards held under a contract, in id order, after `after`: one
    /// page of at most [`MAX_LIST_SHARDS`]. Only the contract's client may
    /// ask. Before a period payment the client deletes what no file of
    /// its own keeps (a store a crash cut short still landed), so that
    /// the period pays for exactly what is held.
    List {
        contract_id: ContractId,
        after: Option<ShardId>,
    },
    /// Prove holding shards of a contract: for each challenge, the leaf
    /// and its Merkle path. Only the contract's client may ask, at most
    /// [`MAX_AUDIT_CHALLENGES`] distinct challenges at a time.
    Audit {
        contract_id: ContractId,
        challenges: Vec<Challenge>,
    },
    /// The contract as the provider holds it (paid-through height,
    /// allowance, term): a client restored from its index asks, since its
    /// copy may predate its last payment. Only the contract's client may.
    Contract {
        contract_id: ContractId,
    },
    /// A client's signed index pointer ([`crate::pointer`]), for the
    /// provider to keep and republish in the DHT while it holds the
    /// client's index and their contract runs. Only a pointer signed by
    /// the asking client, naming this provider, is kept.
    PublishPointer {
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
}

impl ControlRequest {
    /// The request's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlRequest::GetOffer => "get-offer",
            ControlRequest::Propose(_) => "propose",
            ControlRequest::PaymentNotice(_) => "payment-notice",
            ControlRequest::Delete { .. } => "delete",
            ControlRequest::List { .. } => "list",
            ControlRequest::Audit { .. } => "audit",
            ControlRequest::Contract { .. } => "contract",
            ControlRequest::PublishPointer { .. } => "publish-pointer",
        }
    }
}

/// One leaf of one shard that an audit asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Challenge {
    pub shard_id: ShardId,
    pub leaf: u32,
}

/// A provider's answer to one challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAnswer {
    /// The leaf's bytes and its sibling path (32-byte hashes, bottom up),
    /// which the client checks against the shard id it holds.
    Proof {
        #[serde(with = "serde_bytes")]
        leaf: Vec<u8>,
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
    },
    /// The provider does not have that leaf (or shard).
    Missing,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlResponse {
    Offer(Offer),
    Quote(Quote),
    /// The payment is credited; the contract as it now stands.
    Paid(ContractStatus),
    Deleted {
        count: u64,
        /// Bytes freed on the provider's disk.
        bytes: u64,
    },
    /// One page of a `List`: each shard and its size, in id order
    /// (pairs, not maps, to stay small); `more` if pages follow.
    Listed {
        shards: Vec<(ShardId, u64)>,
        more: bool,
    },
    /// One answer per challenge, in order.
    Audited {
        answers: Vec<AuditAnswer>,
    },
    /// The contract as it stands, unchanged.
    Contract(ContractStatus),
    /// The pointer is kept (or a newer one was held): the sequence number
    /// the provider now republishes.
    PointerKept {
        seq: u64,
    },
    Error(WireError),
}

/// A request for `add_bytes` more allowance on contract `contract_id`, or
/// (an id the provider has no contract under) to form that contract. The
/// price must be the provider's current one for a new contract and the
/// contract's own for a revision; the client checks the quoted amount
/// against it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proposal {
    pub contract_id: ContractId,
    pub add_bytes: u64,
    pub price_sat_per_gib_month: u64,
    pub period_blocks: u32,
    /// The contract runs at least until this height (a revision may only
    /// extend it).
    pub term_end_height: u32,
}

/// A provider's price for a proposal: pay `amount_sat` to
/// `payout_address` by `deadline_height`, then give notice. The bytes are
/// paid pro rata through `paid_through_height`, the end of the period.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quote {
    pub revision_id: RevisionId,
    pub contract_id: ContractId,
    /// Checked against the client's network before it is used.
    pub payout_address: Address<NetworkUnchecked>,
    pub amount_sat: u64,
    pub paid_through_height: u32,
    pub deadline_height: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PaymentNotice {
    pub contract_id: ContractId,
    pub txid: Txid,
    pub vout: u32,
    pub purpose: Purpose,
}

/// What a payment is for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Purpose {
    /// A quoted revision, prepaid before its bytes are uploaded.
    Revision(RevisionId),
    /// The next period: `allowance_bytes` (at least what the provider
    /// holds) from the current paid-through height to
    /// `paid_through_height`, one period later. `term_end_height` may
    /// extend the term (a renewal), never shorten it.
    Period {
        allowance_bytes: u64,
        paid_through_height: u32,
        term_end_height: u32,
    },
}

/// A contract as the provider holds it, after a payment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContractStatus {
    pub contract_id: ContractId,
    pub allowance_bytes: u64,
    pub stored_bytes: u64,
    pub paid_through_height: u32,
    pub term_end_height: u32,
}

/// Blocks in the 30-day month prices are quoted for.
pub const BLOCKS_PER_MONTH: u64 = 4320;
/// Smallest payment output, whatever it pays for: the largest dust limit
/// of a standard output (P2PKH's), so no payment is ever unrelayable. It
/// applies per output, that is per provider per payment, never per file.
pub const MIN_PAYMENT_SAT: u64 = 546;

/// What keeping `bytes` for `blocks` costs at `price` sat/GiB/month,
/// rounded up and never below [`MIN_PAYMENT_SAT`]. None on overflow.
pub fn payment_amount(price_sat_per_gib_month: u64, bytes: u64, blocks: u32) -> Option<u64> {
    let num = (price_sat_per_gib_month as u128)
        .checked_mul(bytes as u128)?
        .checked_mul(blocks as u128)?;
    let den = (1u128 << 30) * BLOCKS_PER_MONTH as u128;
    let amount = u64::try_from(num.div_ceil(den)).ok()?;
    Some(amount.max(MIN_PAYMENT_SAT))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardRequest {
    Store {
        contract_id: ContractId,
        shard_id: ShardId,
        /// A CBOR byte string, as `serde_bytes` writes it; shared, so a
        /// retry does not copy it.
        data: bytes::Bytes,
    },
    Fetch {
        shard_id: ShardId,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShardResponse {
    Stored(Receipt),
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    Error(WireError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireErrorKind {
    HashMismatch,
    TooLarge,
    NoSpace,
    NotFound,
    Forbidden,
    /// Term, price or amount not acceptable.
    BadTerms,
    UnknownContract,
    /// The notice's output does not (yet) pay the contract's address.
    PaymentNotFound,
    PaymentInsufficient,
    /// The provider cannot reach its bitcoind right now; try later.
    Unavailable,
    /// Malformed: duplicate challenges, a leaf past a shard's end.
    BadRequest,
    /// Over this peer's budget of requests of this kind; try later.
    RateLimited,
    Internal,
    /// The contract's paid allowance is used up: buy more before storing.
    OverAllowance,
}

/// Longest error text a peer may send, in bytes: a longer one makes the
/// whole answer undecodable (refused, never cut). Ours are cut to fit.
pub const MAX_WIRE_ERROR_TEXT: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub kind: WireErrorKind,
    /// Peer text: shown only through [`sanitize`].
    #[serde(deserialize_with = "bounded_text")]
    pub message: String,
}

impl WireError {
    pub fn new(kind: WireErrorKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_WIRE_ERROR_TEXT {
            let mut end = MAX_WIRE_ERROR_TEXT;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        WireError { kind, message }
    }
}

fn bounded_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    if text.len() > MAX_WIRE_ERROR_TEXT {
        return Err(serde::de::Error::custom(format!(
            "error text of {} bytes exceeds {MAX_WIRE_ERROR_TEXT}",
            text.len()
        )));
    }
    Ok(text)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Offer {
    pub protocol_version: u32,
    pub free_bytes: u64,
    pub price_sat_per_gib_month: u64,
    pub min_term_blocks: u32,
    pub max_term_blocks: u32,
    pub max_shard_bytes: u64,
}

/// A provider's signed statement that it durably stored a shard for a client
/// under a contract. The client keeps it as evidence for later disputes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    pub contract_id: ContractId,
    pub shard_id: ShardId,
    pub size: u64,
    #[serde(with = "serde_bytes")]
    pub client: Vec<u8>,
    pub stored_at: u64,
    /// Protobuf-encoded public key of the provider.
    #[serde(with = "serde_bytes")]
    pub provider_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Receipt {
    fn signed_bytes(
        contract_id: &ContractId,
        shard_id: &ShardId,
        size: u64,
        client: &[u8],
        stored_at: u64,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(b"p2pstore/receipt/v1");
        m.extend_from_slice(contract_id.as_bytes());
        m.extend_from_slice(shard_id.as_bytes());
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(&stored_at.to_be_bytes());
        m.extend_from_slice(client);
        m
    }

    pub fn sign(
        key: &Keypair,
        contract_id: ContractId,
        shard_id: ShardId,
        size: u64,
        client: &PeerId,
        stored_at: u64,
    ) -> Option<Self> {
        let client = client.to_bytes();
        let signature = key
            .sign(&Self::signed_bytes(
                &contract_id,
                &shard_id,
                size,
                &client,
                stored_at,
            ))
            .ok()?;
        Some(Receipt {
            contract_id,
            shard_id,
            size,
            client,
            stored_at,
            provider_key: key.public().encode_protobuf(),
            signature,
        })
    }

    /// True when this receipt was signed by `provider` for exactly this
    /// shard, size, contract and client.
    pub fn verify(
        &self,
        provider: &PeerId,
        client: &PeerId,
        contract_id: &ContractId,
        shard_id: &ShardId,
        size: u64,
    ) -> bool {
        let Ok(pk) = PublicKey::try_decode_protobuf(&self.provider_key) else {
            return false;
        };
        pk.to_peer_id() == *provider
            && self.contract_id == *contract_id
            && self.shard_id == *shard_id
            && self.size == size
            && self.client == client.to_bytes()
            && pk.verify(
                &Self::signed_bytes(
                    &self.contract_id,
                    &self.shard_id,
                    self.size,
                    &self.client,
                    self.stored_at,
                ),
                &self.signature,
            )
    }
}

/// Bounds a peer's free text (error messages) before it reaches our logs
/// or an RPC caller: control characters go, and so does length.
pub fn sanitize(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > MAX_CHARS {
        out.push('…');
    }
    out
}

/// Which of the [`PROVIDER_BUCKETS`] DHT keys a provider announces under:
/// fixed by its peer id, so nobody chooses a crowded or an empty one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderBucket(u16);

impl ProviderBucket {
    pub fn of(peer: &PeerId) -> Self {
        ProviderBucket(bucket_index(peer, PROVIDER_BUCKETS))
    }

    pub fn all() -> impl Iterator<Item = Self> {
        (0..PROVIDER_BUCKETS).map(ProviderBucket)
    }

    pub fn index(self) -> u16 {
        self.0
    }

    pub fn key(self) -> libp2p::kad::RecordKey {
        bucket_key(self.0)
    }
}

/// Which of `buckets` buckets a peer falls in: p2pstore uses
/// [`PROVIDER_BUCKETS`]; the simulation (`p2pstore-sim`) compares others.
pub fn bucket_index(peer: &PeerId, buckets: u16) -> u16 {
    let h = crate::crypto::sha256(&peer.to_bytes());
    u16::from_be_bytes([h[0], h[1]]) % buckets
}

/// A bucket's DHT key: the SHA-256 multihash (0x12 0x20 ‖ digest) of the
/// label and the bucket number, the form standard Kademlia
/// implementations accept as a provider key.
pub fn bucket_key(index: u16) -> libp2p::kad::RecordKey {
    let mut preimage = PROVIDERS_KEY_LABEL.to_vec();
    preimage.extend_from_slice(&index.to_be_bytes());
    multihash_key(&preimage)
}

/// The DHT key of `preimage`: its SHA-256 multihash, the only form of key
/// standard Kademlia implementations accept.
pub fn multihash_key(preimage: &[u8]) -> libp2p::kad::RecordKey {
    let mut key = MULTIHASH_SHA2_256.to_vec();
    key.extend_from_slice(&crate::crypto::sha256(preimage));
    libp2p::kad::RecordKey::new(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_keys_are_sha256_multihashes_one_per_bucket() {
        let keys: std::collections::HashSet<Vec<u8>> = ProviderBucket::all()
            .map(|b| {
                let key = b.key().to_vec();
                let mh = libp2p::multihash::Multihash::<64>::from_bytes(&key).unwrap();
                assert_eq!((mh.code(), mh.size()), (0x12, 32));
                key
            })
            .collect();
        assert_eq!(keys.len(), PROVIDER_BUCKETS as usize);
        // Peer ids spread over every bucket.
        // 5,000 ids over 256 buckets leave one empty with odds of about 1e-6.
        let used: std::collections::HashSet<ProviderBucket> = (0..5000)
            .map(|_| ProviderBucket::of(&PeerId::random()))
            .collect();
        assert_eq!(used.len(), PROVIDER_BUCKETS as usize);
    }

    #[test]
    fn payment_amounts() {
        // 1 GiB for one month at 1000 sat/GiB/month.
        assert_eq!(payment_amount(1000, 1 << 30, 4320), Some(1000));
        assert_eq!(payment_amount(5000, 1 << 30, 4320), Some(5000));
        // A day at 1000 sat/GiB/month: 1000/30, rounded up.
        assert_eq!(payment_amount(30_000, 1 << 30, 144), Some(1000));
        assert_eq!(payment_amount(1000, 1 << 30, 144 * 17), Some(567));
        // Rounds up, and never below the minimum.
        assert_eq!(payment_amount(5000, 1, 1), Some(MIN_PAYMENT_SAT));
        assert_eq!(payment_amount(100_000, 3 << 29, 8640), Some(300_000));
        // No overflow panic on absurd input.
        assert_eq!(payment_amount(u64::MAX, u64::MAX, u32::MAX), None);
    }

    #[test]
    fn receipt_verifies_only_what_was_signed() {
        let provider = Keypair::generate_ed25519();
        let client = PeerId::random();
        let (c, s) = (
            ContractId::from_bytes([1; 32]),
            ShardId::from_bytes([2; 32]),
        );
        let r = Receipt::sign(&provider, c, s, 100, &client, 5).unwrap();
        let pid = provider.public().to_peer_id();
        assert!(r.verify(&pid, &client, &c, &s, 100));
        assert!(!r.verify(&pid, &client, &c, &s, 101));
        assert!(!r.verify(&pid, &PeerId::random(), &c, &s, 100));
        assert!(!r.verify(&PeerId::random(), &client, &c, &s, 100));
        let mut forged = r.clone();
        forged.signature[0] ^= 1;
        assert!(!forged.verify(&pid, &client, &c, &s, 100));
    }

    fn cbor_len<T: Serialize>(msg: &T) -> u64 {
        cbor4ii::serde::to_vec(Vec::new(), msg).unwrap().len() as u64
    }

    /// The largest message of every kind the limits allow is encoded and
    /// must fit its protocol's size limit, so the constants tell the truth.
    #[test]
    fn largest_messages_fit_their_limits() {
        let id = |i: usize| {
            let mut b = [0xff; 32];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            b
        };
        let ids: Vec<ShardId> = (0..MAX_DELETE_IDS)
            .map(|i| ShardId::from_bytes(id(i)))
            .collect();
        let contract_id = ContractId::from_bytes([0xff; 32]);
        let requests = [ControlRequest::Delete {
            contract_id,
            shard_ids: ids.clone(),
        }];
        for r in &requests {
            let len = cbor_len(r);
            assert!(len <= MAX_CONTROL_MESSAGE, "{len} bytes: {r:?}");
        }
        // An id is a 34-byte CBOR byte string, not 32 integers.
        assert!(cbor_len(&requests[0]) < 34 * MAX_DELETE_IDS as u64 + 200);
        let listed = ControlResponse::Listed {
            shards: ids[..MAX_LIST_SHARDS]
                .iter()
                .map(|&id| (id, u64::MAX))
                .collect(),
            more: true,
        };
        assert!(cbor_len(&listed) <= MAX_CONTROL_MESSAGE);
        let audit = ControlRequest::Audit {
            contract_id,
            challenges: ids[..MAX_AUDIT_CHALLENGES]
                .iter()
                .map(|&shard_id| Challenge {
                    shard_id,
                    leaf: u32::MAX,
                })
                .collect(),
        };
        assert!(cbor_len(&audit) <= MAX_CONTROL_MESSAGE);
        // Every answer a full leaf with the longest path a verifier accepts.
        let audited = ControlResponse::Audited {
            answers: vec![
                AuditAnswer::Proof {
                    leaf: vec![0xff; crate::merkle::LEAF_SIZE as usize],
                    path: vec![0xff; crate::merkle::MAX_PATH_LEN * crate::merkle::HASH_LEN],
                };
                MAX_AUDIT_CHALLENGES
            ],
        };
        let len = cbor_len(&audited);
        assert!(len <= 400_000, "{len} bytes");
        let shard = vec![0xffu8; MAX_SHARD_BYTES as usize];
        let store = ShardRequest::Store {
            contract_id,
            shard_id: ids[0],
            data: shard.clone().into(),
        };
        assert!(cbor_len(&store) <= MAX_SHARD_MESSAGE);
        assert!(cbor_len(&ShardResponse::Data(shard)) <= MAX_SHARD_MESSAGE);
        let receipt = Receipt::sign(
            &Keypair::generate_ed25519(),
            contract_id,
            ids[0],
            MAX_SHARD_BYTES,
            &PeerId::random(),
            u64::MAX,
        )
        .unwrap();
        assert!(cbor_len(&ShardResponse::Stored(receipt)) <= MAX_CONTROL_MESSAGE);
    }

    #[test]
    fn peer_text_is_sanitized() {
        assert_eq!(sanitize("bad\x1b[31m\nthing"), "bad?[31m?thing");
        assert_eq!(sanitize(&"x".repeat(500)).chars().count(), 201);
        // A peer's over-long error text is refused whole; ours is cut.
        let long = ShardResponse::Error(WireError {
            kind: WireErrorKind::Internal,
            message: "é".repeat(MAX_WIRE_ERROR_TEXT),
        });
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &long).unwrap();
        assert!(crate::network::codec::decode::<ShardResponse>(&bytes).is_err());
        let ours = WireError::new(WireErrorKind::Internal, "é".repeat(MAX_WIRE_ERROR_TEXT));
        assert!(
            ours.message.len() <= MAX_WIRE_ERROR_TEXT
                && ours.message.len() >= MAX_WIRE_ERROR_TEXT - 1
        );
    }
}
