//! Which network a peer connects from: its IP as we observed it on the
//! connection (not what it announces), and the /16 (IPv4) or /48 (IPv6)
//! group that usually marks one operator or hosting site.

use std::net::IpAddr;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// The IP of an address, IPv4-mapped IPv6 taken as the IPv4 it maps.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4)),
        _ => None,
    })
}

/// A /16 of IPv4 or a /48 of IPv6: placement puts the shards of a segment
/// in different groups when it can, so one site going dark, or one
/// operator posing as many providers from it, holds fewer of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetGroup {
    V4([u8; 2]),
    V6([u8; 6]),
}

impl NetGroup {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                NetGroup::V4([o[0], o[1]])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => NetGroup::of(IpAddr::V4(v4)),
                None => {
                    let o = v6.octets();
                    NetGroup::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_slash_16_and_slash_48() {
        let g = |s: &str| NetGroup::of(s.parse().unwrap());
        assert_eq!(g("10.1.2.3"), g("10.1.200.7"));
        assert_ne!(g("10.1.2.3"), g("10.2.2.3"));
        assert_eq!(g("2001:db8:1::1"), g("2001:db8:1:ffff::2"));
        assert_ne!(g("2001:db8:1::1"), g("2001:db8:2::1"));
        assert_eq!(g("::ffff:10.1.9.9"), g("10.1.2.3"));
        let a: Multiaddr = "/ip6/::ffff:192.0.2.1/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&a), Some("192.0.2.1".parse().unwrap()));
        let d: Multiaddr = "/dns4/example.com/tcp/1".parse().unwrap();
        assert_eq!(ip_of(&d), None);
    }
}
