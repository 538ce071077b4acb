//! Index pointers the provider keeps for its clients: a client whose index
//! backup this provider holds hands it the signed pointer, and the
//! provider republishes it in the DHT for as long as their contract runs.
//! So the pointer outlives the client being offline, and a client restored
//! from its mnemonic finds its index even when it was gone for days.

use std::time::Duration;

use libp2p::PeerId;
use tracing::{debug, info, warn};

use super::ProviderService;
use crate::pointer::{self, IndexPointer};
use crate::protocol::*;

impl ProviderService {
    /// Keeps `record` if it is `peer`'s own pointer, names this provider,
    /// and `peer` has a running contract here; an older one than held is
    /// answered with the held sequence number. Either way the held pointer
    /// is published at once.
    pub(super) async fn keep_pointer(&self, peer: PeerId, record: Vec<u8>) -> ControlResponse {
        let err = |kind, msg: String| ControlResponse::Error(WireError::new(kind, msg));
        let key = pointer::key(&peer);
        let new = match IndexPointer::verify(&key, &record) {
            Ok(p) => p,
            Err(e) => return err(WireErrorKind::BadRequest, e.to_string()),
        };
        if !new.providers.contains(&self.net.local_peer_id()) {
            return err(
                WireErrorKind::Forbidden,
                "the pointer does not name this provider".into(),
            );
        }
        match self.contracts.live_with(&peer) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return err(
                    WireErrorKind::UnknownContract,
                    "no running contract with you".into(),
                );
            }
            Err(e) => return err(WireErrorKind::Internal, e.to_string()),
        }
        let held = match self.held_pointer(&peer) {
            Ok(h) => h,
            Err(e) => return err(WireErrorKind::Internal, e.to_string()),
        };
        let kept = match held {
            Some(h) if h.seq >= new.seq => h,
            _ => {
                if let Err(e) = self.pointers.insert(&peer, &hex::encode(&new.record)) {
                    return err(WireErrorKind::Internal, e.to_string());
                }
                debug!(client = %peer, seq = new.seq, "index pointer kept");
                new
            }
        };
        let seq = kept.seq;
        let net = self.net.clone();
        tokio::spawn(async move {
            if let Err(e) = net.put_record(key, kept.record).await {
                debug!(client = %peer, "index pointer not yet published: {e}");
            }
        });
        ControlResponse::PointerKept { seq }
    }

    /// The pointer held for `client`; a record that no longer verifies
    /// (a damaged database) counts as none.
    fn held_pointer(&self, client: &PeerId) -> crate::Result<Option<IndexPointer>> {
        Ok(self
            .pointers
            .get(client)?
            .and_then(|text| verify_held(client, &text)))
    }

    /// Republishes every held pointer whose client still has a running
    /// contract here, and forgets the others: once the contract ends the
    /// index is no longer held, so nothing is left to point at.
    pub async fn republish_pointers(&self) -> crate::Result<usize> {
        let mut published = 0;
        let held: Vec<(PeerId, String)> =
            crate::blocking::run(|| self.pointers.iter().collect::<crate::Result<Vec<_>>>())?;
        for (client, text) in held {
            let Some(p) = verify_held(&client, &text) else {
                warn!(%client, "held index pointer no longer verifies: forgotten");
                self.pointers.remove(&client)?;
                continue;
            };
            if self.contracts.live_with(&client)?.is_none() {
                info!(%client, "no running contract: index pointer forgotten");
                self.pointers.remove(&client)?;
                continue;
            }
            match self.net.put_record(pointer::key(&client), p.record).await {
                Ok(()) => published += 1,
                Err(e) => debug!(%client, "index pointer not republished: {e}"),
            }
        }
        Ok(published)
    }

    pub fn spawn_pointer_republish(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = this.republish_pointers().await {
                    warn!("republishing index pointers: {e}");
                }
            }
        })
    }
}

/// A pointer as the provider's database holds it (hex), if it still
/// verifies: a damaged record counts as none.
fn verify_held(client: &PeerId, text: &str) -> Option<IndexPointer> {
    let bytes = hex::decode(text).ok()?;
    IndexPointer::verify(&pointer::key(client), &bytes).ok()
}
