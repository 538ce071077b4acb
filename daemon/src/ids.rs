//! Identifiers, each its own type, so that a shard id can never be passed
//! where a contract id is expected.
//!
//! Every id has exactly one encoding per kind of format: a CBOR byte string
//! on the wire (34 bytes for 32, where serde's default array of integers
//! takes about 63), and lowercase hex in JSON (RPC and sled records). serde
//! tells the two apart with `is_human_readable`.
//!
//! Peer ids, txids and addresses are the upstream types, stored as the text
//! they have always been stored as ([`as_text`], [`checked_address`]).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text id did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a {1}: expected 64 hex digits")]
pub struct ParseIdError(pub String, pub &'static str);

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name([u8; 32]);

        impl $name {
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                $name(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// A fresh random id from the OS RNG.
            pub fn random() -> crate::Result<Self> {
                crate::crypto::random_bytes().map($name)
            }

            /// The first 8 bytes in hex: enough to tell ids apart in logs.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..8])
            }

            /// The id of a 32-byte sled key; None for any other length.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; 32]>::try_from(bytes).ok().map($name)
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                parse_hex32(s).map($name).ok_or_else(|| ParseIdError(s.to_string(), $what))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize32(&self.0, s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize32(d, $what).map($name)
            }
        }
    };
}

id32!(
    /// A file: random, chosen by the client at put time; also the salt of
    /// the file's key.
    FileId,
    "file id"
);
id32!(
    /// A shard: the root of the Merkle tree over its bytes
    /// ([`crate::merkle`]), so a shard names its content and a provider
    /// can prove it holds any leaf of it.
    ShardId,
    "shard id"
);
id32!(
    /// The running storage contract between one client and one provider
    /// (one per pair at a time): random, chosen by the client.
    ContractId,
    "contract id"
);
id32!(
    /// One proposed change to a contract's allowance, quoted by the
    /// provider and held until it is paid or lapses: random, chosen by the
    /// provider.
    RevisionId,
    "revision id"
);

impl ShardId {
    /// The id of a shard with these bytes: their Merkle root.
    pub fn of(shard: &[u8]) -> Self {
        ShardId(crate::merkle::root(shard))
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn serialize32<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&hex::encode(bytes))
    } else {
        s.serialize_bytes(bytes)
    }
}

fn deserialize32<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
) -> Result<[u8; 32], D::Error> {
    struct V(&'static str);
    impl Visitor<'_> for V {
        type Value = [u8; 32];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a {} (32 bytes, or 64 hex digits)", self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<[u8; 32], E> {
            parse_hex32(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<[u8; 32], E> {
            <[u8; 32]>::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
        }
    }
    if d.is_human_readable() {
        d.deserialize_str(V(what))
    } else {
        d.deserialize_bytes(V(what))
    }
}

/// serde for types whose stored form is their `Display`/`FromStr` text:
/// `PeerId` and `Txid` records keep the strings they always had.
pub mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }

    /// The same for an `Option`.
    pub mod opt {
        use super::*;

        pub fn serialize<T: Display, S: Serializer>(
            v: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.collect_str(v),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
        where
            T: FromStr,
            T::Err: Display,
            D: Deserializer<'de>,
        {
            Option::<String>::deserialize(d)?
                .map(|t| t.parse().map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// serde for an address that was checked against the wallet's network when
/// it entered the node (from a peer or the RPC), stored as its text.
pub mod checked_address {
    use bdk_wallet::bitcoin::Address;
    use bdk_wallet::bitcoin::address::NetworkUnchecked;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = String::deserialize(d)?;
        let unchecked: Address<NetworkUnchecked> =
            text.parse().map_err(serde::de::Error::custom)?;
        // Only checked addresses are ever stored: see the module doc.
        Ok(unchecked.assume_checked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_in_json_bytes_in_cbor() {
        let id = ShardId::from_bytes([0xab; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<ShardId>(&json).unwrap(), id);
        let cbor = cbor4ii::serde::to_vec(Vec::new(), &id).unwrap();
        // Major type 2 (byte string), one length byte, 32 bytes.
        assert_eq!(cbor.len(), 34);
        assert_eq!(cbor[0], 0x58);
        assert_eq!(cbor4ii::serde::from_slice::<ShardId>(&cbor).unwrap(), id);
        assert!(serde_json::from_str::<ShardId>("\"abcd\"").is_err());
        assert!(cbor4ii::serde::from_slice::<ShardId>(&cbor[..20]).is_err());
    }

    #[test]
    fn text_round_trip() {
        let id = ContractId::from_bytes([7; 32]);
        assert_eq!(id.to_string().parse::<ContractId>().unwrap(), id);
        assert!("zz".parse::<FileId>().is_err());
        assert_eq!(id.short(), "0707070707070707");
    }
}
