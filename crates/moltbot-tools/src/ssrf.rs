//! The SSRF guard shared by `web_fetch` and the browser: which addresses a tool may reach.
//!
//! Public unicast addresses are always allowed. Loopback, private (RFC 1918, unique local),
//! link-local (which holds the cloud metadata address 169.254.169.254), carrier-grade NAT,
//! unspecified, multicast, broadcast and documentation ranges are refused unless the host
//! or a range holding the address is in the allowlist. Names are checked after DNS
//! resolution: every address a name resolves to must pass, so a public name pointing at
//! 127.0.0.1 is refused too.

use ipnet::IpNet;
use moltbot_core::ToolError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use url::Url;

/// The allowlist: host names (exact, case-insensitive), addresses and CIDR ranges.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl HostPolicy {
    /// Parse an allowlist; `field` names the config key in errors.
    pub fn new(allow: &[String], field: &str) -> Result<Self, String> {
        let mut policy = HostPolicy::default();
        for entry in allow {
            let e = entry.trim();
            if e.is_empty() {
                return Err(format!("`{field}` must not hold empty entries"));
            }
            if let Ok(net) = e.parse::<IpNet>() {
                policy.nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if e.contains('/') {
                return Err(format!(
                    "`{field}` entry {e:?} is neither a host name, an IP address nor a CIDR range"
                ));
            } else {
                policy.hosts.push(e.to_ascii_lowercase());
            }
        }
        Ok(policy)
    }

    /// Whether `ip` may be reached (public, or allowlisted by range).
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.nets.iter().any(|n| n.contains(&ip))
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Check a URL before connecting: scheme http(s), then every address of its host.
    /// Returns the addresses that passed (the caller connects only to those, so a second
    /// DNS answer cannot swap in a private address).
    pub async fn check_url(&self, url: &Url) -> Result<Vec<SocketAddr>, ToolError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ToolError::Denied(format!(
                "only http and https URLs may be opened, got scheme `{}`",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| ToolError::InvalidArguments(format!("`url` has no host: {url}")))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let allowed_by_name = self.host_allowed(host);
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            _ => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| ToolError::Failed(format!("cannot resolve host `{host}`: {e}")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(ToolError::Failed(format!("host `{host}` has no address")));
        }
        if !allowed_by_name {
            if let Some(bad) = addrs.iter().find(|a| !self.ip_allowed(a.ip())) {
                return Err(ToolError::Denied(format!(
                    "`{host}` resolves to {}, a {} address; add it to the tool's `allow_hosts` \
                     to permit it",
                    bad.ip(),
                    class(bad.ip())
                )));
            }
        }
        Ok(addrs)
    }
}

/// Whether an address is global unicast (reachable on the public internet).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        // 100.64.0.0/10 carrier-grade NAT
        || (o[0] == 100 && (64..128).contains(&o[1]))
        // 192.0.0.0/24 protocol assignments, 198.18.0.0/15 benchmarking, 240/4 reserved
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        || o[0] >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let o = ip.octets();
    // Prefixes that carry an IPv4 address: judge by that address.
    // 64:ff9b::/96 NAT64 (the translator would connect to the embedded address)
    if s[..6] == [0x0064, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // 2002::/16 6to4
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // ::/96 IPv4-compatible (deprecated; `::` and `::1` are in it too)
        || s[..6] == [0; 6]
        // fc00::/7 unique local, fe80::/10 link-local, fec0::/10 site-local (deprecated)
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        // 2001:db8::/32 documentation, 64:ff9b:1::/48 local NAT64
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1))
}

/// A word for why an address is refused, for error messages.
fn class(ip: IpAddr) -> &'static str {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_private() => "private",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local (cloud metadata)",
        IpAddr::V6(v6) if v6.is_loopback() => "loopback",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "private",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        _ => "non-public",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
            "fec0::1",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad} must not be public");
        }
        for good in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert!(is_public(good.parse().unwrap()), "{good} is public");
        }
    }

    #[tokio::test]
    async fn refuses_private_targets_unless_allowlisted() {
        let none = HostPolicy::new(&[], "tools.web_fetch.allow_hosts").unwrap();
        for url in [
            "http://127.0.0.1:8080/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://localhost/",
        ] {
            let err = none.check_url(&Url::parse(url).unwrap()).await.unwrap_err();
            assert!(matches!(err, ToolError::Denied(_)), "{url}: {err}");
        }
        let err = none
            .check_url(&Url::parse("file:///etc/passwd").unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("scheme `file`"), "{err}");
        let lo = HostPolicy::new(&["127.0.0.0/8".into()], "x").unwrap();
        let ok = lo
            .check_url(&Url::parse("http://127.0.0.1:9/").unwrap())
            .await
            .unwrap();
        assert_eq!(ok, vec!["127.0.0.1:9".parse().unwrap()]);
        // Allowing one range does not open the metadata address.
        assert!(lo
            .check_url(&Url::parse("http://169.254.169.254/").unwrap())
            .await
            .is_err());
        assert!(HostPolicy::new(&["10.0.0.0/33".into()], "f")
            .unwrap_err()
            .contains("`f` entry"));
    }
}
