//! The index pointer: a small signed DHT record naming an account's newest
//! index backup (`client::backup`), so that a whole account can be
//! restored from its mnemonic alone.
//!
//! It lives under a key derived from the account's peer id, which the
//! mnemonic derives. Anyone may send a record under that key; only one
//! signed by the account's identity key counts, and of those the highest
//! sequence number wins. So a forged pointer is ignored and an older one
//! replayed loses. DHT servers (providers, seeds) apply that rule before
//! they store a record ([`accept`]), and a restoring client applies it to
//! every answer of its lookup ([`newest`]).
//!
//! Where the index is (its manifest) is sealed under a key derived from
//! the mnemonic: the record shows who holds the index, not what it is.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::kad::RecordKey;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::crypto::{NONCE_LEN, derive_key, random_bytes};
use crate::error::{Error, Result};
use crate::network::codec;

/// Prefix of the DHT key an account's pointer lives under.
pub const POINTER_KEY_LABEL: &[u8] = b"p2pstore/index-pointer/v1/";
/// What a pointer's signature covers, before its body.
const SIGNING_LABEL: &[u8] = b"p2pstore/index-pointer-signature/v1";
/// Label of the key that seals the index's manifest inside a pointer.
const SEAL_LABEL: &[u8] = b"p2pstore/index-pointer-seal/v1";
/// Largest pointer record, in bytes: far inside Kademlia's 16 KiB
/// message, with room for an index of a few segments. A record over it is
/// refused, never cut; a client whose index would need a larger pointer
/// fails its backup with a clear error.
pub const MAX_POINTER_BYTES: usize = 12 * 1024;
/// Most providers a pointer may name.
pub const MAX_POINTER_PROVIDERS: usize = 64;

/// The DHT key of `account`'s pointer: a SHA-256 multihash, as for
/// provider keys.
pub fn key(account: &PeerId) -> RecordKey {
    let mut preimage = POINTER_KEY_LABEL.to_vec();
    preimage.extend_from_slice(&account.to_bytes());
    crate::protocol::multihash_key(&preimage)
}

/// Why a record is not a valid pointer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PointerError {
    #[error("pointer record of {0} bytes exceeds {MAX_POINTER_BYTES}")]
    TooLarge(usize),
    #[error("malformed pointer record: {0}")]
    Malformed(String),
    #[error("pointer signature does not verify")]
    BadSignature,
    /// Signed, but by another account than the key it is stored under.
    #[error("pointer signed by another account than its key names")]
    WrongAccount,
}

/// The signed part.
#[derive(Serialize, Deserialize)]
struct Body {
    #[serde(with = "serde_bytes")]
    account: Vec<u8>,
    seq: u64,
    created_at: u64,
    providers: Vec<ByteBuf>,
    #[serde(with = "serde_bytes")]
    sealed_index: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    /// The account's public key, protobuf-encoded (as libp2p encodes it).
    #[serde(with = "serde_bytes")]
    public_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

/// A pointer whose signature and key have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPointer {
    pub account: PeerId,
    /// Higher is newer; the account raises it with every backup.
    pub seq: u64,
    pub created_at: u64,
    /// The providers holding the index's shards: they republish it.
    pub providers: Vec<PeerId>,
    /// The index's manifest, sealed (see [`seal_index`]).
    pub sealed_index: Vec<u8>,
    /// The record as signed, to store and republish unchanged.
    pub record: Vec<u8>,
}

impl IndexPointer {
    /// Signs a new pointer with the account's identity key.
    pub fn sign(
        key: &Keypair,
        seq: u64,
        created_at: u64,
        providers: &[PeerId],
        sealed_index: Vec<u8>,
    ) -> Result<IndexPointer> {
        let account = key.public().to_peer_id();
        if providers.len() > MAX_POINTER_PROVIDERS {
            return Err(Error::Internal(format!(
                "an index held by {} providers does not fit a pointer (at most {MAX_POINTER_PROVIDERS})",
                providers.len()
            )));
        }
        let body = Body {
            account: account.to_bytes(),
            seq,
            created_at,
            providers: providers
                .iter()
                .map(|p| ByteBuf::from(p.to_bytes()))
                .collect(),
            sealed_index: sealed_index.clone(),
        };
        let body = codec::encode(&body, MAX_POINTER_BYTES as u64)
            .map_err(|e| Error::Internal(format!("index pointer: {e}")))?;
        let signature = key
            .sign(&signed_bytes(&body))
            .map_err(|e| Error::Internal(format!("signing the index pointer: {e}")))?;
        let envelope = Envelope {
            body,
            public_key: key.public().encode_protobuf(),
            signature,
        };
        let record = codec::encode(&envelope, MAX_POINTER_BYTES as u64).map_err(|e| {
            Error::Internal(format!(
                "the index has grown past what one pointer can name: {e}"
            ))
        })?;
        Ok(IndexPointer {
            account,
            seq,
            created_at,
            providers: providers.to_vec(),
            sealed_index,
            record,
        })
    }

    /// Checks a record found (or sent) under `record_key`: it must be a
    /// pointer signed by the account whose key it is stored under.
    pub fn verify(record_key: &RecordKey, value: &[u8]) -> Result<IndexPointer, PointerError> {
        if value.len() > MAX_POINTER_BYTES {
            return Err(PointerError::TooLarge(value.len()));
        }
        let malformed = |e: std::io::Error| PointerError::Malformed(e.to_string());
        let envelope: Envelope = codec::decode(value).map_err(malformed)?;
        let public_key = PublicKey::try_decode_protobuf(&envelope.public_key)
            .map_err(|e| PointerError::Malformed(format!("public key: {e}")))?;
        if !public_key.verify(&signed_bytes(&envelope.body), &envelope.signature) {
            return Err(PointerError::BadSignature);
        }
        let body: Body = codec::decode(&envelope.body).map_err(malformed)?;
        let account = public_key.to_peer_id();
        if body.account != account.to_bytes() || key(&account) != *record_key {
            return Err(PointerError::WrongAccount);
        }
        if body.providers.len() > MAX_POINTER_PROVIDERS {
            return Err(PointerError::Malformed("too many providers".into()));
        }
        let providers = body
            .providers
            .iter()
            .map(|p| PeerId::from_bytes(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PointerError::Malformed(format!("provider id: {e}")))?;
        Ok(IndexPointer {
            account,
            seq: body.seq,
            created_at: body.created_at,
            providers,
            sealed_index: body.sealed_index,
            record: value.to_vec(),
        })
    }
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut m = SIGNING_LABEL.to_vec();
    m.extend_from_slice(body);
    m
}

/// Whether a DHT server should store `value` under `record_key` over the
/// record it holds there (`held`): only a valid pointer, and only a newer
/// one than it holds. Records of any other kind are not p2pstore's and
/// are not kept, so nobody can fill a node's record store with them.
pub fn accept(record_key: &RecordKey, value: &[u8], held: Option<&[u8]>) -> bool {
    let Ok(new) = IndexPointer::verify(record_key, value) else {
        return false;
    };
    match held.map(|h| IndexPointer::verify(record_key, h)) {
        Some(Ok(old)) => new.seq > old.seq,
        _ => true,
    }
}

/// The newest valid pointer of `account` among `values` (every record a
/// lookup found), and how many records were rejected as invalid.
pub fn newest(
    account: &PeerId,
    values: impl IntoIterator<Item = Vec<u8>>,
) -> (Option<IndexPointer>, usize) {
    let record_key = key(account);
    let mut best: Option<IndexPointer> = None;
    let mut rejected = 0;
    for v in values {
        match IndexPointer::verify(&record_key, &v) {
            Ok(p) if best.as_ref().is_none_or(|b| p.seq > b.seq) => best = Some(p),
            Ok(_) => {}
            Err(_) => rejected += 1,
        }
    }
    (best, rejected)
}

fn seal_cipher(file_master: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&(*derive_key(file_master, None, SEAL_LABEL)).into())
}

/// Seals the index's manifest for a pointer: nonce ‖ ciphertext, bound to
/// the account.
pub fn seal_index(file_master: &[u8; 32], account: &PeerId, plain: &[u8]) -> Result<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = random_bytes()?;
    let aad = account.to_bytes();
    let sealed = seal_cipher(file_master)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        .map_err(|_| Error::Internal("sealing the index manifest failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

/// Opens what [`seal_index`] sealed; None if the key is not the one that
/// sealed it (another mnemonic) or the bytes were changed.
pub fn open_index(file_master: &[u8; 32], account: &PeerId, sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, body) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let aad = account.to_bytes();
    seal_cipher(file_master)
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(key: &Keypair, seq: u64) -> IndexPointer {
        let providers = [PeerId::random(), PeerId::random()];
        IndexPointer::sign(key, seq, 7, &providers, vec![1, 2, 3]).unwrap()
    }

    #[test]
    fn only_the_accounts_newest_pointer_counts() {
        let account = Keypair::generate_ed25519();
        let id = account.public().to_peer_id();
        let k = key(&id);
        let (p1, p2) = (pointer(&account, 1), pointer(&account, 2));
        assert_eq!(IndexPointer::verify(&k, &p2.record).unwrap(), p2);

        // Signed by someone else, for this account's key: refused.
        let forger = Keypair::generate_ed25519();
        let forged = pointer(&forger, 99);
        assert_eq!(
            IndexPointer::verify(&k, &forged.record),
            Err(PointerError::WrongAccount)
        );
        // The account's own body under another key's signature.
        let mut env: Envelope = codec::decode(&p2.record).unwrap();
        env.signature = forger.sign(&signed_bytes(&env.body)).unwrap();
        let resigned = codec::encode(&env, MAX_POINTER_BYTES as u64).unwrap();
        assert_eq!(
            IndexPointer::verify(&k, &resigned),
            Err(PointerError::BadSignature)
        );
        // A flipped byte in the body breaks the signature.
        let mut env: Envelope = codec::decode(&p2.record).unwrap();
        let last = env.body.len() - 1;
        env.body[last] ^= 1;
        let tampered = codec::encode(&env, MAX_POINTER_BYTES as u64).unwrap();
        assert_eq!(
            IndexPointer::verify(&k, &tampered),
            Err(PointerError::BadSignature)
        );
        assert!(matches!(
            IndexPointer::verify(&k, &vec![0; MAX_POINTER_BYTES + 1]),
            Err(PointerError::TooLarge(_))
        ));

        // A lookup's answers: the newest valid one wins whatever the order.
        let answers = vec![
            p1.record.clone(),
            forged.record.clone(),
            p2.record.clone(),
            tampered,
            b"junk".to_vec(),
        ];
        let (best, rejected) = newest(&id, answers);
        assert_eq!(best.unwrap().seq, 2);
        assert_eq!(rejected, 3);

        // A DHT server keeps the newest and refuses replays and forgeries.
        assert!(accept(&k, &p1.record, None));
        assert!(accept(&k, &p2.record, Some(&p1.record)));
        assert!(!accept(&k, &p1.record, Some(&p2.record)));
        assert!(!accept(&k, &p2.record, Some(&p2.record)));
        assert!(!accept(&k, &forged.record, None));
        assert!(!accept(&key(&forger.public().to_peer_id()), b"junk", None));
    }

    #[test]
    fn the_sealed_index_opens_only_with_its_key_and_account() {
        let master = [9u8; 32];
        let account = PeerId::random();
        let sealed = seal_index(&master, &account, b"manifest").unwrap();
        assert_eq!(
            open_index(&master, &account, &sealed).as_deref(),
            Some(&b"manifest"[..])
        );
        assert!(open_index(&[8u8; 32], &account, &sealed).is_none());
        assert!(open_index(&master, &PeerId::random(), &sealed).is_none());
        assert!(open_index(&master, &account, &sealed[..10]).is_none());
    }
}
