//! The account: one BIP39 mnemonic from which every key is derived, and the
//! password-encrypted keystore file that holds it.
//!
//! Deriving everything from the mnemonic (identity, file master key, wallet
//! seed) is what lets a user recover a whole account on a new machine.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{derive_key, random_bytes};
use crate::error::{Error, Result};

pub const KEYSTORE_FILE: &str = "keystore.json";

/// Keys derived from the account mnemonic. Never logged (no Debug).
pub struct AccountKeys {
    pub identity: Keypair,
    pub file_master: Zeroizing<[u8; 32]>,
    /// BIP39 seed, for the wallet's BIP84 descriptors.
    pub seed: Zeroizing<[u8; 64]>,
    /// The chain height at which the account was created (or the height a
    /// restore was told it was created at): no earlier block can pay it,
    /// so a wallet built from scratch scans from here. Kept in the
    /// keystore beside the mnemonic, which does not record it.
    pub birthday_height: u32,
}

impl AccountKeys {
    pub fn from_mnemonic(m: &bip39::Mnemonic, birthday_height: u32) -> Result<Self> {
        let seed = Zeroizing::new(m.to_seed(""));
        let mut id_secret = derive_key(seed.as_ref(), None, b"p2pstore/identity/ed25519/v1");
        let identity = Keypair::ed25519_from_bytes(&mut id_secret[..])
            .map_err(|e| Error::Keystore(format!("identity key: {e}")))?;
        let file_master = derive_key(seed.as_ref(), None, b"p2pstore/file-master/v1");
        Ok(AccountKeys {
            identity,
            file_master,
            seed,
            birthday_height,
        })
    }
}

pub fn generate_mnemonic() -> Result<bip39::Mnemonic> {
    let entropy: Zeroizing<[u8; 32]> = Zeroizing::new(random_bytes()?);
    bip39::Mnemonic::from_entropy(entropy.as_ref()).map_err(|e| Error::Internal(e.to_string()))
}

pub fn parse_mnemonic(words: &str) -> Result<bip39::Mnemonic> {
    bip39::Mnemonic::parse(words.trim()).map_err(|e| Error::InvalidMnemonic(e.to_string()))
}

/// Argon2id parameters are stored in the file so they can be raised later
/// without breaking existing keystores.
#[derive(Serialize, Deserialize)]
struct KeystoreFile {
    version: u32,
    kdf: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    #[serde(with = "hex::serde")]
    salt: Vec<u8>,
    #[serde(with = "hex::serde")]
    nonce: Vec<u8>,
    #[serde(with = "hex::serde")]
    ciphertext: Vec<u8>,
    /// Not secret, so in the clear. Keystores from before birthdays have
    /// none and scan from genesis, as they always did.
    #[serde(default)]
    birthday_height: u32,
}

const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;

pub struct Keystore {
    path: PathBuf,
}

impl Keystore {
    pub fn new(datadir: &Path) -> Self {
        Keystore {
            path: datadir.join(KEYSTORE_FILE),
        }
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Encrypts and writes the mnemonic. Refuses to overwrite: losing an
    /// existing keystore would lose the account's funds and files.
    pub fn create(
        &self,
        mnemonic: &bip39::Mnemonic,
        password: &str,
        birthday_height: u32,
    ) -> Result<()> {
        if self.exists() {
            return Err(Error::AlreadyInitialized);
        }
        let salt: [u8; 16] = random_bytes()?;
        let nonce: [u8; 24] = random_bytes()?;
        let key = kdf(password, &salt, M_COST_KIB, T_COST, 1)?;
        let phrase = Zeroizing::new(mnemonic.to_string());
        let ciphertext = XChaCha20Poly1305::new(&(*key).into())
            .encrypt(&XNonce::from(nonce), phrase.as_bytes())
            .map_err(|_| Error::Keystore("encryption failed".into()))?;
        let file = KeystoreFile {
            version: 1,
            kdf: "argon2id".into(),
            m_cost_kib: M_COST_KIB,
            t_cost: T_COST,
            p_cost: 1,
            salt: salt.to_vec(),
            nonce: nonce.to_vec(),
            ciphertext,
            birthday_height,
        };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::Keystore(format!("encoding the keystore: {e}")))?;
        write_private_file(&self.path, &json)
    }

    /// The account's keys, decrypted with `password`.
    pub fn unlock(&self, password: &str) -> Result<AccountKeys> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotInitialized);
            }
            Err(e) => return Err(e.into()),
        };
        let file: KeystoreFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Keystore(format!("{} is damaged: {e}", self.path.display())))?;
        if file.version != 1 || file.kdf != "argon2id" {
            return Err(Error::Keystore(format!(
                "unsupported keystore version {}",
                file.version
            )));
        }
        let nonce: [u8; 24] = file
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| Error::Keystore("bad nonce length".into()))?;
        let key = kdf(
            password,
            &file.salt,
            file.m_cost_kib,
            file.t_cost,
            file.p_cost,
        )?;
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new(&(*key).into())
                .decrypt(&XNonce::from(nonce), file.ciphertext.as_slice())
                .map_err(|_| Error::WrongPassword)?,
        );
        let words = std::str::from_utf8(&plain).map_err(|_| Error::Keystore("not UTF-8".into()))?;
        AccountKeys::from_mnemonic(&parse_mnemonic(words)?, file.birthday_height)
    }
}

/// Largest Argon2 memory cost a keystore may ask for (1 GiB): the
/// parameters are read from the file, and a damaged or crafted one must
/// not make the daemon allocate without bound or spin for hours.
pub const MAX_M_COST_KIB: u32 = 1 << 20;
/// Largest Argon2 time cost (passes) a keystore may ask for.
pub const MAX_T_COST: u32 = 32;
/// Largest Argon2 parallelism a keystore may ask for.
pub const MAX_P_COST: u32 = 16;

fn kdf(password: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
    if m > MAX_M_COST_KIB || t > MAX_T_COST || p > MAX_P_COST {
        return Err(Error::Keystore(format!(
            "key derivation parameters out of bounds (memory {m} KiB, {t} passes, {p} lanes; \
             at most {MAX_M_COST_KIB} KiB, {MAX_T_COST}, {MAX_P_COST})"
        )));
    }
    let params = Params::new(m, t, p, Some(32)).map_err(|e| Error::Keystore(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password.as_bytes(), salt, out.as_mut())
        .map_err(|e| Error::Keystore(e.to_string()))?;
    Ok(out)
}

/// Writes a file readable only by its owner, atomically and durably:
/// a fresh temp file, fsync, rename, fsync of the directory, so a crash
/// leaves the old file or the new one, never half a secret, and a
/// finished write survives a power cut.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    crate::blocking::run(|| write_private_file_now(path, contents))
}

fn write_private_file_now(path: &Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // A left-over temp file (from a crash, or planted) would keep its own
    // mode and owner: `mode` applies only to a file being created.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Loads the bootstrap node's identity, creating it on first start, so its
/// peer id (which other nodes put in their `--bootstrap` address) is stable.
pub fn load_or_create_node_key(path: &Path) -> Result<Keypair> {
    match fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| Error::Keystore(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let kp = Keypair::generate_ed25519();
            let bytes = kp
                .to_protobuf_encoding()
                .map_err(|e| Error::Keystore(e.to_string()))?;
            write_private_file(path, &bytes)?;
            Ok(kp)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystore_round_trip_and_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::new(dir.path());
        let m = generate_mnemonic().unwrap();
        ks.create(&m, "correct horse", 812).unwrap();
        let mode = fs::metadata(dir.path().join(KEYSTORE_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        let keys = ks.unlock("correct horse").unwrap();
        let direct = AccountKeys::from_mnemonic(&m, 812).unwrap();
        assert_eq!(*keys.seed, *direct.seed);
        assert_eq!(keys.birthday_height, 812);
        assert!(matches!(ks.unlock("wrong"), Err(Error::WrongPassword)));
        assert!(matches!(
            ks.create(&m, "x", 0),
            Err(Error::AlreadyInitialized)
        ));
        // A keystore from before birthdays scans from genesis.
        let path = dir.path().join(KEYSTORE_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v.as_object_mut()
            .unwrap()
            .remove("birthday_height")
            .unwrap();
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(ks.unlock("correct horse").unwrap().birthday_height, 0);
        // The phrase is not stored in clear.
        let raw = fs::read_to_string(dir.path().join(KEYSTORE_FILE)).unwrap();
        let first_word = m.to_string().split(' ').next().unwrap().to_string();
        assert!(!raw.contains(&m.to_string()) && !raw.contains(&format!(" {first_word} ")));
    }

    #[test]
    fn derivation_is_deterministic_and_separated() {
        let m = parse_mnemonic(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        )
        .unwrap();
        let a = AccountKeys::from_mnemonic(&m, 0).unwrap();
        let b = AccountKeys::from_mnemonic(&m, 0).unwrap();
        assert_eq!(
            a.identity.public().to_peer_id(),
            b.identity.public().to_peer_id()
        );
        assert_eq!(*a.file_master, *b.file_master);
        let other = AccountKeys::from_mnemonic(&generate_mnemonic().unwrap(), 0).unwrap();
        assert_ne!(*a.file_master, *other.file_master);
        assert!(matches!(
            parse_mnemonic("not a mnemonic"),
            Err(Error::InvalidMnemonic(_))
        ));
    }

    #[test]
    fn a_keystore_asking_for_unbounded_work_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ks = Keystore::new(dir.path());
        ks.create(&generate_mnemonic().unwrap(), "pw", 0).unwrap();
        let path = dir.path().join(KEYSTORE_FILE);
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v["m_cost_kib"] = serde_json::json!(u32::MAX);
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        match ks.unlock("pw") {
            Err(Error::Keystore(why)) => assert!(why.contains("out of bounds"), "{why}"),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_private_write_replaces_a_planted_temp_file_and_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, b"planted").unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666)).unwrap();
        write_private_file(&path, b"mine").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"mine");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!tmp.exists());
    }
}
