//! The SSRF guard: which URLs and which addresses an outbound fetch may reach.
//!
//! - Only `https`; plain `http` only to a host the operator names in
//!   `outbound.allow_http_hosts`.
//! - No credentials in the URL.
//! - The host name is resolved once; if any address it resolves to is internal
//!   (loopback, private, link-local, shared/CGNAT, unique-local, multicast,
//!   unspecified, broadcast, reserved, documentation, cloud metadata, or an IPv6
//!   form embedding one of those), the URL is refused unless the operator lists
//!   the host, the address or its network in `outbound.allow_private_hosts`.
//!   Cloud-metadata addresses are admitted only when listed as that exact address.
//! - The connection then goes to exactly the checked addresses (see
//!   `PinnedResolver`), so a second DNS answer cannot switch it.
//!
//! One room, over 600 lines: the address classes and their table; more than
//! a third of the lines are its unit tests, one per class.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Why an address is internal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Loopback,
    /// RFC 1918.
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 100.64.0.0/10 (RFC 6598, carrier-grade NAT).
    SharedCgnat,
    /// fc00::/7 (and the deprecated site-local fec0::/10).
    UniqueLocal,
    Multicast,
    /// 0.0.0.0, ::, and 0.0.0.0/8 ("this network").
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.0.0/24, 198.18.0.0/15, 240.0.0.0/4, documentation ranges, SIIT's
    /// `::ffff:0:0:0/96`, ...
    Reserved,
    /// 169.254.169.254, fd00:ec2::254, fd20:ce::254, 192.0.0.192 and other cloud
    /// instance-metadata services.
    CloudMetadata,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private (RFC 1918) address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::SharedCgnat => "a shared (carrier-grade NAT) address",
            AddressClass::UniqueLocal => "a unique-local (private IPv6) address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Reserved => "a reserved address",
            AddressClass::CloudMetadata => "a cloud instance-metadata address",
        })
    }
}

/// Cloud instance-metadata services (AWS, GCP, Azure, OpenStack: 169.254.169.254;
/// AWS ECS: 169.254.170.2; Alibaba: 100.100.100.200; Azure WireServer:
/// 168.63.129.16, a public address reachable only from inside Azure; Oracle
/// Cloud: 192.0.0.192, inside 192.0.0.0/24, which is refused as reserved anyway).
/// Named here so that a network entry in `outbound.allow_private_hosts` never
/// admits them (only the exact address does).
const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
    Ipv4Addr::new(192, 0, 0, 192),
];
/// IPv6 instance-metadata addresses: AWS (fd00:ec2::254) and GCP (fd20:ce::254).
/// Both are unique-local (refused as such), named so that a network entry never
/// admits them.
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
    Ipv6Addr::new(0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x0254),
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

pub fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if METADATA_V4.contains(&ip) {
        return Some(CloudMetadata);
    }
    let class = if ip.is_loopback() {
        Loopback
    } else if ip.is_private() {
        Private
    } else if ip.is_link_local() {
        LinkLocal
    } else if in_v4(ip, [100, 64, 0, 0], 10) {
        SharedCgnat
    } else if ip.is_multicast() {
        Multicast
    } else if ip.is_broadcast() {
        Broadcast
    } else if in_v4(ip, [0, 0, 0, 0], 8) {
        Unspecified
    } else if in_v4(ip, [192, 0, 0, 0], 24)      // IETF protocol assignments
        || in_v4(ip, [192, 0, 2, 0], 24)         // TEST-NET-1
        || in_v4(ip, [198, 51, 100, 0], 24)      // TEST-NET-2
        || in_v4(ip, [203, 0, 113, 0], 24)       // TEST-NET-3
        || in_v4(ip, [198, 18, 0, 0], 15)        // benchmarking
        || in_v4(ip, [192, 88, 99, 0], 24)       // 6to4 relay anycast (deprecated)
        || in_v4(ip, [240, 0, 0, 0], 4)
    {
        Reserved
    } else {
        return None;
    };
    Some(class)
}

/// The IPv4 address an IPv6 address carries, for the forms that route to it:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated),
/// NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`) and 6to4 (`2002:AABB:CCDD::/48`).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let o = ip.octets();
    let last4 = |o: [u8; 16]| Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if o[..12].iter().all(|b| *b == 0) && u128::from(ip) > 1 {
        return Some(last4(o));
    }
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96)
        || in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48)
    {
        return Some(last4(o));
    }
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

pub fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if METADATA_V6.contains(&ip) {
        return Some(CloudMetadata);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if in_v6(ip, Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96) {
        // SIIT's IPv4-translated form (`::ffff:0:a.b.c.d`, RFC 2765, obsolete):
        // a translator may deliver it to the IPv4 address, and no public provider
        // is reached that way, so the whole /96 is refused (as the address it
        // carries when that is internal, so that metadata stays metadata).
        let o = ip.octets();
        let v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
        return Some(classify_v4(v4).unwrap_or(Reserved));
    }
    if let Some(v4) = embedded_v4(ip) {
        // An IPv6 form of an IPv4 address is judged as that address (NAT64 with
        // DNS64 gives public providers such addresses on IPv6-only networks).
        return classify_v4(v4);
    }
    let class = if ip.is_multicast() {
        Multicast
    } else if in_v6(ip, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10) {
        LinkLocal
    } else if in_v6(ip, Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7)
        || in_v6(ip, Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10)
    {
        UniqueLocal
    } else if in_v6(ip, Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32)  // documentation
        || in_v6(ip, Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64)          // discard-only
        || in_v6(ip, Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32)         // Teredo
        || in_v6(ip, Ipv6Addr::new(0x2001, 0x10, 0, 0, 0, 0, 0, 0), 28)      // ORCHID
        || in_v6(ip, Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28)      // ORCHIDv2
        || in_v6(ip, Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20)         // documentation
        || in_v6(ip, Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16)
    // SRv6 SIDs
    {
        Reserved
    } else {
        return None;
    };
    Some(class)
}

/// Why `ip` may not be reached without an allowlist entry; `None` for a public
/// unicast address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// One `outbound.allow_private_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PrivateEntry {
    /// Every address this exact host name resolves to (cloud metadata excepted).
    Host(String),
    /// Exactly this address.
    Addr(IpAddr),
    /// Every address in this network (cloud metadata excepted).
    Net(IpAddr, u32),
}

/// The operator's allowlists, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    http_hosts: Vec<String>,
    private: Vec<PrivateEntry>,
}

/// Lower-case a host name and drop one trailing dot; IP literals are written in
/// their canonical form (IPv6 without brackets).
fn normalize_host(raw: &str) -> String {
    let h = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => h,
    }
}

fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn url_host(url: &Url) -> Option<String> {
    match url.host()? {
        Host::Domain(d) => Some(normalize_host(d)),
        Host::Ipv4(ip) => Some(ip.to_string()),
        Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

impl Policy {
    /// Parse the two allowlists; the error names the entry at fault.
    pub fn new(
        allow_http_hosts: &[String],
        allow_private_hosts: &[String],
    ) -> Result<Self, String> {
        let mut http_hosts = Vec::new();
        for raw in allow_http_hosts {
            let h = normalize_host(raw);
            if h.parse::<IpAddr>().is_err() && !is_host_name(&h) {
                return Err(format!(
                    "outbound.allow_http_hosts: {raw:?} is not a host name or an IP address"
                ));
            }
            http_hosts.push(h);
        }
        let mut private = Vec::new();
        for raw in allow_private_hosts {
            let entry = raw.trim();
            let bad = || {
                format!(
                    "outbound.allow_private_hosts: {raw:?} is not a host name, an IP address \
                     or a network (such as 10.1.0.0/16)"
                )
            };
            if let Some((addr, prefix)) = entry.split_once('/') {
                let ip: IpAddr = addr.parse().map_err(|_| bad())?;
                let prefix: u32 = prefix.parse().map_err(|_| bad())?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if prefix > max {
                    return Err(bad());
                }
                private.push(PrivateEntry::Net(ip, prefix));
            } else {
                let h = normalize_host(entry);
                match h.parse::<IpAddr>() {
                    Ok(ip) => private.push(PrivateEntry::Addr(ip)),
                    Err(_) if is_host_name(&h) => private.push(PrivateEntry::Host(h)),
                    Err(_) => return Err(bad()),
                }
            }
        }
        Ok(Self {
            http_hosts,
            private,
        })
    }

    /// Whether plain `http` is allowed to this URL's host.
    pub fn http_allowed(&self, url: &Url) -> bool {
        url_host(url).is_some_and(|h| self.http_hosts.contains(&h))
    }

    /// Whether an internal address `ip` of class `class`, reached through the
    /// URL host `host`, is allowlisted.
    fn private_allowed(&self, host: &str, ip: IpAddr, class: AddressClass) -> bool {
        let ip = canonical(ip);
        self.private.iter().any(|e| match e {
            PrivateEntry::Addr(a) => canonical(*a) == ip,
            _ if class == AddressClass::CloudMetadata => false,
            PrivateEntry::Host(h) => h == host,
            PrivateEntry::Net(net, prefix) => match (canonical(*net), ip) {
                (IpAddr::V4(n), IpAddr::V4(i)) => in_v4(i, n.octets(), *prefix),
                (IpAddr::V6(n), IpAddr::V6(i)) => in_v6(i, n, *prefix),
                _ => false,
            },
        })
    }

    /// Check a URL before any network use: scheme, credentials, host.
    pub fn check_url(&self, raw: &str) -> Result<Url, Refused> {
        let url = Url::parse(raw).map_err(|_| Refused::InvalidUrl)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        let Some(host) = url_host(&url) else {
            return Err(Refused::InvalidUrl);
        };
        match url.scheme() {
            "https" => {}
            "http" if self.http_allowed(&url) => {}
            "http" => return Err(Refused::PlainHttp { host }),
            other => {
                return Err(Refused::Scheme {
                    scheme: other.to_owned(),
                })
            }
        }
        if url.port_or_known_default().is_none() {
            return Err(Refused::InvalidUrl);
        }
        Ok(url)
    }

    /// Check every address a URL's host resolved to; all must pass.
    pub fn check_addresses(&self, url: &Url, addrs: &[IpAddr]) -> Result<(), Refused> {
        let host = url_host(url).unwrap_or_default();
        if addrs.is_empty() {
            return Err(Refused::NoAddress { host });
        }
        for ip in addrs {
            if let Some(class) = classify(*ip) {
                if !self.private_allowed(&host, *ip, class) {
                    return Err(Refused::Address {
                        host,
                        ip: *ip,
                        class,
                    });
                }
            }
        }
        Ok(())
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A URL the guard refuses, with a message an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `outbound.enabled = false`: no outbound request at all, not even DNS.
    Disabled,
    InvalidUrl,
    Credentials,
    Scheme {
        scheme: String,
    },
    PlainHttp {
        host: String,
    },
    NoAddress {
        host: String,
    },
    Address {
        host: String,
        ip: IpAddr,
        class: AddressClass,
    },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Disabled => f.write_str(
                "outbound requests are disabled on this server (outbound.enabled = false)",
            ),
            Refused::InvalidUrl => f.write_str("it is not a valid absolute URL"),
            Refused::Credentials => {
                f.write_str("URLs with credentials (user:password@) are refused")
            }
            Refused::Scheme { scheme } => {
                write!(f, "the scheme {scheme:?} is not allowed; use https")
            }
            Refused::PlainHttp { host } => write!(
                f,
                "plain http to {host} is refused; use https, or have the operator add {host} to \
                 outbound.allow_http_hosts"
            ),
            Refused::NoAddress { host } => write!(f, "{host} resolves to no address"),
            Refused::Address { host, ip, class } if *class == AddressClass::CloudMetadata => {
                write!(
                    f,
                    "{host} resolves to {ip}, {class}; refused (only an exact-address entry in \
                 outbound.allow_private_hosts admits it)"
                )
            }
            Refused::Address { host, ip, class } => write!(
                f,
                "{host} resolves to {ip}, {class}; outbound requests to internal addresses are \
                 refused unless the operator lists the host or address in \
                 outbound.allow_private_hosts"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn each_internal_address_class_is_recognised() {
        use AddressClass::*;
        let cases: &[(&str, Option<AddressClass>)] = &[
            // loopback
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("::1", Some(Loopback)),
            // RFC 1918
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            // link-local
            ("169.254.1.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            // CGNAT
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            // unique local
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fec0::1", Some(UniqueLocal)),
            // multicast
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            // unspecified, broadcast
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("255.255.255.255", Some(Broadcast)),
            // reserved and documentation
            ("240.0.0.1", Some(Reserved)),
            ("192.0.2.10", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("2001:db8::1", Some(Reserved)),
            // cloud metadata
            ("169.254.169.254", Some(CloudMetadata)),
            ("169.254.170.2", Some(CloudMetadata)),
            ("100.100.100.200", Some(CloudMetadata)),
            ("168.63.129.16", Some(CloudMetadata)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("fd20:ce::254", Some(CloudMetadata)),
            ("192.0.0.192", Some(CloudMetadata)),
            ("64:ff9b::c000:c0", Some(CloudMetadata)),
            ("::ffff:192.0.0.192", Some(CloudMetadata)),
            // the rest of 192.0.0.0/24 (IETF protocol assignments) and the
            // neighbours of the GCP address
            ("192.0.0.1", Some(Reserved)),
            ("192.0.0.255", Some(Reserved)),
            ("fd20:ce::253", Some(UniqueLocal)),
            // SIIT IPv4-translated (::ffff:0:0:0/96): always refused
            ("::ffff:0:7f00:1", Some(Loopback)),
            ("::ffff:0:a9fe:a9fe", Some(CloudMetadata)),
            ("::ffff:0:a00:1", Some(Private)),
            ("::ffff:0:808:808", Some(Reserved)),
            ("::ffff:0:0:0", Some(Unspecified)),
            // IPv6 forms of IPv4 addresses
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::ffff:192.168.0.1", Some(Private)),
            ("::10.1.2.3", Some(Private)),
            ("64:ff9b::a9fe:a9fe", Some(CloudMetadata)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("2002:a00:1::1", Some(Private)),
            ("2002:7f00:1::1", Some(Loopback)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            // public unicast
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("169.255.0.1", None),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ];
        for (addr, want) in cases {
            let ip = if addr.contains(':') {
                v6(addr)
            } else {
                v4(addr)
            };
            assert_eq!(classify(ip), *want, "{addr}");
        }
    }

    #[test]
    fn urls_only_https_no_credentials() {
        let p = Policy::new(&["lab-idp.corp".into(), "127.0.0.1".into()], &[]).unwrap();
        assert!(p.check_url("https://idp.example.com/x").is_ok());
        assert!(p.check_url("http://lab-idp.corp/x").is_ok());
        assert!(p.check_url("http://LAB-IDP.corp./x").is_ok());
        assert!(p.check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(matches!(
            p.check_url("http://idp.example.com/x"),
            Err(Refused::PlainHttp { .. })
        ));
        // Exactly the names listed: not a subdomain, not another loopback spelling.
        for other in [
            "http://x.lab-idp.corp/",
            "http://localhost/",
            "http://127.0.0.2/",
        ] {
            assert!(
                matches!(p.check_url(other), Err(Refused::PlainHttp { .. })),
                "{other}"
            );
        }
        assert_eq!(
            p.check_url("https://user:pw@idp.example.com/"),
            Err(Refused::Credentials)
        );
        assert_eq!(
            p.check_url("https://user@idp.example.com/"),
            Err(Refused::Credentials)
        );
        assert!(matches!(
            p.check_url("ftp://idp.example.com/"),
            Err(Refused::Scheme { .. })
        ));
        assert!(matches!(
            p.check_url("file:///etc/passwd"),
            Err(Refused::Scheme { .. } | Refused::InvalidUrl)
        ));
        assert_eq!(p.check_url("not a url"), Err(Refused::InvalidUrl));
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowlisted() {
        let none = Policy::default();
        let url = Url::parse("https://idp.example.com/").unwrap();
        for ip in [
            "127.0.0.1",
            "10.0.0.5",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            let ip = if ip.contains(':') { v6(ip) } else { v4(ip) };
            assert!(none.check_addresses(&url, &[ip]).is_err(), "{ip}");
        }
        assert!(none.check_addresses(&url, &[v4("93.184.215.14")]).is_ok());
        // One internal address among public ones refuses the whole answer.
        assert!(none
            .check_addresses(&url, &[v4("93.184.215.14"), v4("10.0.0.1")])
            .is_err());
        assert!(matches!(
            none.check_addresses(&url, &[]),
            Err(Refused::NoAddress { .. })
        ));
    }

    #[test]
    fn private_allowlist_admits_exactly_what_it_names() {
        let p = Policy::new(
            &[],
            &[
                "127.0.0.1".into(),
                "lab-idp.corp".into(),
                "10.20.0.0/16".into(),
                "fd00:1::/32".into(),
            ],
        )
        .unwrap();
        let u = |s: &str| Url::parse(s).unwrap();
        let ok = |url: &str, ip: IpAddr| p.check_addresses(&u(url), &[ip]).is_ok();
        // The address entry: that address, through any name; not its neighbours.
        assert!(ok("https://127.0.0.1/", v4("127.0.0.1")));
        assert!(ok("https://localhost/", v4("127.0.0.1")));
        assert!(ok("https://[::ffff:127.0.0.1]/", v6("::ffff:127.0.0.1")));
        assert!(!ok("https://127.0.0.2/", v4("127.0.0.2")));
        assert!(!ok("https://[::1]/", v6("::1")));
        // The host entry: whatever private address that exact name resolves to.
        assert!(ok("https://lab-idp.corp/", v4("192.168.7.7")));
        assert!(ok("https://LAB-IDP.corp./", v4("192.168.7.7")));
        assert!(!ok("https://other.corp/", v4("192.168.7.7")));
        assert!(!ok("https://sub.lab-idp.corp/", v4("192.168.7.7")));
        // ... but never a cloud-metadata address.
        assert!(!ok("https://lab-idp.corp/", v4("169.254.169.254")));
        // The network entries.
        assert!(ok("https://a.corp/", v4("10.20.1.2")));
        assert!(!ok("https://a.corp/", v4("10.21.1.2")));
        assert!(ok("https://a.corp/", v6("fd00:1::5")));
        assert!(!ok("https://a.corp/", v6("fd00:2::5")));
        // Metadata only by its exact address.
        let meta = Policy::new(&[], &["169.254.0.0/16".into()]).unwrap();
        assert!(meta
            .check_addresses(&u("https://x/"), &[v4("169.254.169.254")])
            .is_err());
        assert!(meta
            .check_addresses(&u("https://x/"), &[v4("169.254.1.1")])
            .is_ok());
        // Oracle's and GCP's metadata addresses, and their SIIT form, are
        // metadata too: a network entry that covers them does not admit them.
        let nets = Policy::new(
            &[],
            &["192.0.0.0/24".into(), "fd00::/8".into(), "::/0".into()],
        )
        .unwrap();
        for ip in [
            v4("192.0.0.192"),
            v6("fd20:ce::254"),
            v6("::ffff:0:c000:c0"),
            v6("::ffff:0:a9fe:a9fe"),
        ] {
            assert!(
                nets.check_addresses(&u("https://x/"), &[ip]).is_err(),
                "{ip}"
            );
        }
        assert!(nets
            .check_addresses(&u("https://x/"), &[v4("192.0.0.8")])
            .is_ok());
        assert!(nets
            .check_addresses(&u("https://x/"), &[v6("fd20:ce::253")])
            .is_ok());
        let exact = Policy::new(&[], &["169.254.169.254".into()]).unwrap();
        assert!(exact
            .check_addresses(&u("https://x/"), &[v4("169.254.169.254")])
            .is_ok());
    }

    #[test]
    fn bad_allowlist_entries_are_named() {
        let e = Policy::new(&["http://x".into()], &[]).unwrap_err();
        assert!(
            e.contains("allow_http_hosts") && e.contains("http://x"),
            "{e}"
        );
        for bad in ["10.0.0.0/33", "x/8", "a b", ""] {
            let e = Policy::new(&[], &[bad.into()]).unwrap_err();
            assert!(e.contains("allow_private_hosts"), "{bad}: {e}");
        }
    }

    #[test]
    fn refusals_say_what_to_do() {
        let p = Policy::default();
        let url = Url::parse("https://idp.corp/").unwrap();
        let msg = p
            .check_addresses(&url, &[v4("10.1.2.3")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("10.1.2.3") && msg.contains("outbound.allow_private_hosts"),
            "{msg}"
        );
        let msg = p.check_url("http://idp.corp/").unwrap_err().to_string();
        assert!(msg.contains("outbound.allow_http_hosts"), "{msg}");
    }
}
