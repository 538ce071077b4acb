//! Turns the account's BIP39 seed into the wallet's BIP84 descriptors and a
//! signing key. bdk 3.2 no longer wants to be the key store, so the `Wallet`
//! only ever sees public descriptors; the master key lives here, in memory,
//! and signs PSBTs directly.

use std::fmt;

use bdk_wallet::KeychainKind;
use bdk_wallet::bitcoin::bip32::Xpriv;
use bdk_wallet::bitcoin::psbt::Psbt;
use bdk_wallet::bitcoin::secp256k1::{All, Secp256k1};
use bdk_wallet::bitcoin::{Network, NetworkKind};
use bdk_wallet::descriptor::{ExtendedDescriptor, IntoWalletDescriptor};
use bdk_wallet::template::Bip84;

use super::WalletError;

/// The master private key. Deliberately not `Debug`-printable so it can
/// never end up in a log line through a derived `Debug`.
pub struct SigningKey(Xpriv);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    pub fn from_seed(seed: &[u8; 64], network: Network) -> Result<Self, WalletError> {
        Xpriv::new_master(network, seed)
            .map(SigningKey)
            .map_err(|e| WalletError::Other(format!("cannot derive master key: {e}")))
    }

    /// Public BIP84 descriptors (external, internal). Coin type follows the
    /// network kind: 0 on mainnet, 1 on every test network.
    pub fn descriptors(
        &self,
        network: Network,
        secp: &Secp256k1<All>,
    ) -> Result<(ExtendedDescriptor, ExtendedDescriptor), WalletError> {
        let kind = NetworkKind::from(network);
        let derive = |keychain| {
            Bip84(self.0, keychain)
                .into_wallet_descriptor(secp, kind)
                // The key map is dropped on purpose: we sign with `self.0`.
                .map(|(descriptor, _keymap)| descriptor)
                .map_err(|e| WalletError::Other(format!("cannot build descriptor: {e}")))
        };
        Ok((
            derive(KeychainKind::External)?,
            derive(KeychainKind::Internal)?,
        ))
    }

    /// Adds our signatures to every input whose BIP32 origin bdk recorded in
    /// the PSBT (all of ours). This is the path bdk 3.2's deprecation of
    /// `Wallet::sign` points to.
    pub fn sign(&self, psbt: &mut Psbt, secp: &Secp256k1<All>) -> Result<(), WalletError> {
        psbt.sign(&self.0, secp).map(|_| ()).map_err(|(_, errors)| {
            let detail: Vec<String> = errors
                .iter()
                .map(|(input, e)| format!("input {input}: {e}"))
                .collect();
            WalletError::Other(format!("signing failed: {}", detail.join("; ")))
        })
    }
}
