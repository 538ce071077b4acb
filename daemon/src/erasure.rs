//! Redundancy: a sealed segment split into K data shards plus N-K parity
//! shards (Reed-Solomon, reed-solomon-simd), any K of which rebuild it.
//! 1-of-1 is the plain single copy: the shard is the ciphertext itself,
//! and K-of-K stripes without parity.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// K-of-N: `k` data shards, `n` shards in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheme {
    pub k: u16,
    pub n: u16,
}

/// Upper bound on shards per segment; each lands at a distinct provider.
pub const MAX_SHARDS: u16 = 32;

impl Scheme {
    pub const LOW: Scheme = Scheme { k: 1, n: 1 };
    pub const MEDIUM: Scheme = Scheme { k: 2, n: 4 };
    pub const HIGH: Scheme = Scheme { k: 3, n: 9 };

    /// Parses `low`, `medium`, `high` or an explicit `K/N`.
    pub fn parse(s: &str) -> Result<Scheme> {
        let bad = || {
            Error::InvalidParams(format!(
                "redundancy {s:?}: use low, medium, high or K/N with 1 <= K <= N <= {MAX_SHARDS}"
            ))
        };
        let scheme = match s.trim() {
            "low" => Scheme::LOW,
            "medium" => Scheme::MEDIUM,
            "high" => Scheme::HIGH,
            other => {
                let (k, n) = other.split_once('/').ok_or_else(bad)?;
                Scheme {
                    k: k.trim().parse().map_err(|_| bad())?,
                    n: n.trim().parse().map_err(|_| bad())?,
                }
            }
        };
        if scheme.k == 0 || scheme.k > scheme.n || scheme.n > MAX_SHARDS {
            return Err(bad());
        }
        Ok(scheme)
    }

    pub fn label(&self) -> String {
        format!("{}/{}", self.k, self.n)
    }

    /// Size of each shard for a sealed segment of `cipher_len` bytes:
    /// the codec wants equal, even, non-zero shard sizes.
    pub fn shard_len(&self, cipher_len: usize) -> usize {
        if *self == Scheme::LOW {
            return cipher_len;
        }
        let per = cipher_len.div_ceil(self.k as usize).max(1);
        per + per % 2
    }

    /// Splits a sealed segment into its `n` shards.
    pub fn encode(&self, cipher: &[u8]) -> Result<Vec<Vec<u8>>> {
        if *self == Scheme::LOW {
            return Ok(vec![cipher.to_vec()]);
        }
        let len = self.shard_len(cipher.len());
        let mut shards: Vec<Vec<u8>> = (0..self.k as usize)
            .map(|i| {
                let start = (i * len).min(cipher.len());
                let end = ((i + 1) * len).min(cipher.len());
                let mut s = cipher[start..end].to_vec();
                s.resize(len, 0);
                s
            })
            .collect();
        // K/K is striping without parity, which the codec does not take.
        if self.n > self.k {
            let recovery =
                reed_solomon_simd::encode(self.k as usize, (self.n - self.k) as usize, &shards)
                    .map_err(|e| Error::Internal(format!("erasure encoding: {e}")))?;
            shards.extend(recovery);
        }
        Ok(shards)
    }

    /// Rebuilds the sealed segment from any `k` shards, given by index.
    pub fn decode(&self, shards: &[(usize, Vec<u8>)], cipher_len: usize) -> Result<Vec<u8>> {
        let k = self.k as usize;
        if shards.len() < k {
            return Err(Error::Integrity(format!(
                "{} of {k} needed shards",
                shards.len()
            )));
        }
        if *self == Scheme::LOW {
            let mut out = shards[0].1.clone();
            out.truncate(cipher_len);
            return Ok(out);
        }
        let mut data: Vec<Option<&[u8]>> = vec![None; k];
        for (i, s) in shards {
            if *i < k {
                data[*i] = Some(s);
            }
        }
        let restored = if data.iter().all(Option::is_some) {
            Default::default()
        } else {
            let originals = shards.iter().filter(|(i, _)| *i < k).map(|(i, s)| (*i, s));
            let recovery = shards
                .iter()
                .filter(|(i, _)| *i >= k)
                .map(|(i, s)| (i - k, s));
            reed_solomon_simd::decode(k, (self.n - self.k) as usize, originals, recovery)
                .map_err(|e| Error::Integrity(format!("erasure decoding: {e}")))?
        };
        let mut out = Vec::with_capacity(k * self.shard_len(cipher_len));
        for (i, slot) in data.iter().enumerate() {
            match (*slot).or_else(|| restored.get(&i).map(Vec::as_slice)) {
                Some(s) => out.extend_from_slice(s),
                None => {
                    return Err(Error::Integrity(format!(
                        "data shard {i} could not be rebuilt"
                    )));
                }
            }
        }
        out.truncate(cipher_len);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_levels_and_explicit() {
        assert_eq!(Scheme::parse("medium").unwrap(), Scheme { k: 2, n: 4 });
        assert_eq!(Scheme::parse("high").unwrap(), Scheme { k: 3, n: 9 });
        assert_eq!(Scheme::parse("5/8").unwrap(), Scheme { k: 5, n: 8 });
        for bad in ["0/3", "4/3", "1/99", "x", "2-4"] {
            assert!(Scheme::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn any_k_shards_rebuild_the_segment() {
        let cipher: Vec<u8> = (0..100_001u32).map(|i| (i * 7 % 251) as u8).collect();
        for scheme in [
            Scheme::LOW,
            Scheme::MEDIUM,
            Scheme::HIGH,
            Scheme { k: 1, n: 3 },
            Scheme { k: 2, n: 2 },
            Scheme { k: 3, n: 3 },
        ] {
            let shards = scheme.encode(&cipher).unwrap();
            assert_eq!(shards.len(), scheme.n as usize);
            assert!(
                shards
                    .iter()
                    .all(|s| s.len() == scheme.shard_len(cipher.len()))
            );
            // Every window of k consecutive shard indexes (wrapping) suffices.
            for start in 0..scheme.n as usize {
                let pick: Vec<(usize, Vec<u8>)> = (0..scheme.k as usize)
                    .map(|j| (start + j) % scheme.n as usize)
                    .map(|i| (i, shards[i].clone()))
                    .collect();
                assert_eq!(
                    scheme.decode(&pick, cipher.len()).unwrap(),
                    cipher,
                    "{scheme:?} from {start}"
                );
            }
            if scheme.k > 1 {
                let too_few: Vec<_> = (0..scheme.k as usize - 1)
                    .map(|i| (i, shards[i].clone()))
                    .collect();
                assert!(scheme.decode(&too_few, cipher.len()).is_err());
            }
        }
    }

    #[test]
    fn tiny_and_empty_segments() {
        for len in [0usize, 1, 16, 17] {
            let cipher = vec![9u8; len];
            let shards = Scheme::MEDIUM.encode(&cipher).unwrap();
            let pick = vec![(2, shards[2].clone()), (3, shards[3].clone())];
            assert_eq!(Scheme::MEDIUM.decode(&pick, len).unwrap(), cipher);
        }
    }
}
