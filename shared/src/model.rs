//! Plain types the store and the layers above it share (the store is the floor: it imports
//! nothing above it, so what both sides name lives here).

use crate::ids::ProjectId;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Keyed hashes of a person's id within a project, one per pepper in use (current first):
/// what the erasure suppression list and audit keep instead of the id. The store asks for
/// them; the keys layer, which holds the peppers, computes them (`keys::ErasedIdHasher`).
pub trait SubjectHashes: Sync {
    fn hashes(&self, project: ProjectId, subject: &str) -> Vec<[u8; 32]>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Ingest only; may ship in a browser.
    Write,
    /// One project's data.
    Read,
    /// Projects, keys and jobs.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Scope::Write, Scope::Read, Scope::Admin].into_iter().find(|s| s.as_str() == name)
    }
}

/// HMAC-SHA256 of a key under the server's pepper: what the database stores and looks up.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHash(…)")
    }
}

/// How much of a client's address a project keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpPolicy {
    /// The network part only (/24, /48), as analytics tools do by default.
    #[default]
    Truncate,
    Full,
    None,
}

impl IpPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            IpPolicy::Truncate => "truncate",
            IpPolicy::Full => "full",
            IpPolicy::None => "none",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [IpPolicy::Truncate, IpPolicy::Full, IpPolicy::None].into_iter().find(|policy| policy.as_str() == name)
    }

    pub fn apply(self, ip: IpAddr) -> Option<IpAddr> {
        match self {
            IpPolicy::Truncate => Some(truncate_ip(ip)),
            IpPolicy::Full => Some(ip),
            IpPolicy::None => None,
        }
    }
}

/// Drops the host part of an address: the last octet of IPv4 (/24), all but the first
/// 48 bits of IPv6, as analytics tools do by default.
pub fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, 0))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => truncate_ip(IpAddr::V4(v4)),
            None => {
                let [a, b, c, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_network_only() {
        assert_eq!(truncate_ip("203.0.113.77".parse().expect("ip")).to_string(), "203.0.113.0");
        assert_eq!(truncate_ip("2001:db8:abcd:12::1".parse().expect("ip")).to_string(), "2001:db8:abcd::");
        assert_eq!(truncate_ip("::ffff:198.51.100.9".parse().expect("ip")).to_string(), "198.51.100.0");
    }
}
