//! Client-side file encryption and content hashing.
//!
//! Each file gets its own key, HKDF-SHA256(master key, file id). Each segment
//! is sealed with XChaCha20-Poly1305 under a fresh random 24-byte nonce, and
//! its associated data binds the file id, the segment's index and the
//! segment count, so a provider cannot swap, drop, reorder or truncate
//! segments without the tag check failing.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::ids::FileId;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

pub type Hash = [u8; 32];

pub fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// The hash of content the client checks on the way back (a segment's
/// plaintext, a file's content digest): BLAKE3, several times faster
/// than SHA-256 over whole files.
pub fn content_hash(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}

/// Fills a fresh array from the OS RNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| Error::Internal(format!("OS RNG failed: {e}")))?;
    Ok(out)
}

/// HKDF-SHA256 expansion with a domain label; every derived key in the
/// daemon goes through here so labels cannot collide by accident.
pub fn derive_key(ikm: &[u8], salt: Option<&[u8]>, label: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
    let _ = Hkdf::<Sha256>::new(salt, ikm).expand(label, out.as_mut());
    out
}

/// The key that encrypts one file's segments.
pub struct FileKey(Zeroizing<[u8; 32]>);

impl FileKey {
    pub fn derive(master: &[u8; 32], file_id: &FileId) -> Self {
        FileKey(derive_key(
            master,
            Some(file_id.as_bytes()),
            b"p2pstore/file-key/v1",
        ))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.0).into())
    }

    /// Encrypts `buf` in place (appending the tag) under a fresh random
    /// nonce, which it returns.
    pub fn seal(
        &self,
        file_id: &FileId,
        index: u64,
        count: u64,
        buf: &mut Vec<u8>,
    ) -> Result<[u8; NONCE_LEN]> {
        let nonce: [u8; NONCE_LEN] = random_bytes()?;
        self.seal_with_nonce(file_id, index, count, &nonce, buf)?;
        Ok(nonce)
    }

    /// Encrypts under a given nonce. A put seals each segment twice, once
    /// to learn its shard id for the contract and once to upload it; the
    /// caller must check the second ciphertext hashes to the first before
    /// sending it, so a file that changed in between never reuses a nonce
    /// for different plaintext in front of a provider.
    pub fn seal_with_nonce(
        &self,
        file_id: &FileId,
        index: u64,
        count: u64,
        nonce: &[u8; NONCE_LEN],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.cipher()
            .encrypt_in_place(&XNonce::from(*nonce), &aad(file_id, index, count), buf)
            .map_err(|_| Error::Internal("segment encryption failed".into()))
    }

    /// Decrypts `buf` in place, leaving the plaintext; fails unless the tag
    /// matches this file, index and count.
    pub fn open(
        &self,
        file_id: &FileId,
        index: u64,
        count: u64,
        nonce: &[u8; NONCE_LEN],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.cipher()
            .decrypt_in_place(&XNonce::from(*nonce), &aad(file_id, index, count), buf)
            .map_err(|_| Error::Integrity(format!("segment {index} failed authentication")))
    }
}

fn aad(file_id: &FileId, index: u64, count: u64) -> [u8; 52] {
    let mut out = [0u8; 52];
    out[..4].copy_from_slice(b"p2s1");
    out[4..36].copy_from_slice(file_id.as_bytes());
    out[36..44].copy_from_slice(&index.to_be_bytes());
    out[44..52].copy_from_slice(&count.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (FileKey, FileId) {
        let master = [7u8; 32];
        let file_id = FileId::from_bytes([9u8; 32]);
        (FileKey::derive(&master, &file_id), file_id)
    }

    #[test]
    fn round_trip() {
        let (k, id) = key();
        let plain = b"hello segment".to_vec();
        let mut buf = plain.clone();
        let nonce = k.seal(&id, 0, 1, &mut buf).unwrap();
        assert_eq!(buf.len(), plain.len() + TAG_LEN);
        assert_ne!(&buf[..plain.len()], &plain[..]);
        k.open(&id, 0, 1, &nonce, &mut buf).unwrap();
        assert_eq!(buf, plain);
    }

    #[test]
    fn tamper_is_detected() {
        let (k, id) = key();
        let mut buf = vec![1u8; 1000];
        let nonce = k.seal(&id, 0, 1, &mut buf).unwrap();
        buf[500] ^= 1;
        assert!(matches!(
            k.open(&id, 0, 1, &nonce, &mut buf),
            Err(Error::Integrity(_))
        ));
    }

    #[test]
    fn reorder_and_truncation_are_detected() {
        let (k, id) = key();
        let mut seg0 = vec![0u8; 64];
        let n0 = k.seal(&id, 0, 3, &mut seg0).unwrap();
        // Segment 0 presented as segment 1: index is bound.
        assert!(k.open(&id, 1, 3, &n0, &mut seg0.clone()).is_err());
        // The file cut to one segment: count is bound.
        assert!(k.open(&id, 0, 1, &n0, &mut seg0.clone()).is_err());
        // Another file's key or id fails too.
        let other_id = FileId::from_bytes([1u8; 32]);
        let other = FileKey::derive(&[7u8; 32], &other_id);
        assert!(other.open(&other_id, 0, 3, &n0, &mut seg0.clone()).is_err());
        // Cut bytes off the end.
        let mut cut = seg0.clone();
        cut.truncate(10);
        assert!(k.open(&id, 0, 3, &n0, &mut cut).is_err());
        k.open(&id, 0, 3, &n0, &mut seg0).unwrap();
    }

    #[test]
    fn file_keys_differ_per_file() {
        let a = FileKey::derive(&[1u8; 32], &FileId::from_bytes([2u8; 32]));
        let b = FileKey::derive(&[1u8; 32], &FileId::from_bytes([3u8; 32]));
        assert_ne!(*a.0, *b.0);
    }
}
