//! Inbound connections per remote IP. libp2p's `connection_limits` caps
//! per peer id and in total, but peer ids are free: one host could take
//! every pending handshake and every inbound slot under fresh ids. This
//! caps what one IP may hold, so other hosts still get in.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::{Endpoint, transport::PortUse};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

use super::netgroup::ip_of;

/// Handshakes in progress from one IP: half of all allowed
/// (`MAX_PENDING_INCOMING`), so one host cannot hold them all.
pub const MAX_PENDING_PER_IP: usize = 32;
/// Established inbound connections from one IP. High enough for a
/// network of a few hundred nodes on one machine or behind one NAT; a
/// quarter of all allowed (`MAX_ESTABLISHED_INCOMING`).
pub const MAX_ESTABLISHED_PER_IP: usize = 256;

#[derive(Debug, thiserror::Error)]
#[error("{kind} from {ip}: limit of {limit} reached")]
struct Exceeded {
    kind: &'static str,
    ip: IpAddr,
    limit: usize,
}

#[derive(Default)]
pub struct Behaviour {
    pending: HashMap<ConnectionId, IpAddr>,
    established: HashMap<ConnectionId, IpAddr>,
    pending_per_ip: HashMap<IpAddr, usize>,
    established_per_ip: HashMap<IpAddr, usize>,
}

fn inc(map: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    *map.entry(ip).or_default() += 1;
}

fn dec(map: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

impl Behaviour {
    fn end_pending(&mut self, id: ConnectionId) {
        if let Some(ip) = self.pending.remove(&id) {
            dec(&mut self.pending_per_ip, ip);
        }
    }

    /// Established inbound connections from `ip` now.
    fn established_from(&self, ip: &IpAddr) -> usize {
        self.established_per_ip.get(ip).copied().unwrap_or(0)
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else {
            return Ok(());
        };
        let n = self.pending_per_ip.get(&ip).copied().unwrap_or(0);
        if n >= MAX_PENDING_PER_IP {
            return Err(ConnectionDenied::new(Exceeded {
                kind: "pending inbound connections",
                ip,
                limit: MAX_PENDING_PER_IP,
            }));
        }
        inc(&mut self.pending_per_ip, ip);
        self.pending.insert(id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.end_pending(id);
        if let Some(ip) = ip_of(remote)
            && self.established_from(&ip) >= MAX_ESTABLISHED_PER_IP
        {
            return Err(ConnectionDenied::new(Exceeded {
                kind: "inbound connections",
                ip,
                limit: MAX_ESTABLISHED_PER_IP,
            }));
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // Counted only once every behaviour accepted it.
            FromSwarm::ConnectionEstablished(e) if !e.endpoint.is_dialer() => {
                if let Some(ip) = ip_of(e.endpoint.get_remote_address()) {
                    inc(&mut self.established_per_ip, ip);
                    self.established.insert(e.connection_id, ip);
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(ip) = self.established.remove(&e.connection_id) {
                    dec(&mut self.established_per_ip, ip);
                }
            }
            FromSwarm::ListenFailure(e) => self.end_pending(e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
