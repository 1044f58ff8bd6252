//! The outbound-HTTP decision: is this URL granted, and is the address it
//! resolved to one the bot may reach? Pure functions, tested without
//! sockets (tests never send traffic to private or metadata ranges).

use std::net::IpAddr;

/// `scheme://host:port` of a request, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Parses `scheme://host[:port]` (a path is ignored); the port defaults
    /// from the scheme.
    pub fn parse(url: &str) -> Option<Target> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split(['/', '?', '#']).next()?;
        let authority = authority.rsplit('@').next()?;
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']')?;
                (
                    host.to_owned(),
                    after.strip_prefix(':').map(str::parse).transpose().ok()?,
                )
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port.parse().ok()?)),
                None => (authority.to_owned(), None),
            },
        };
        let port = port.or(match scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        })?;
        (!host.is_empty()).then(|| Target {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// Whether grant `pattern` (`scheme://host:port`, host may be `*.domain`)
/// covers `target` (a URL or another pattern).
pub fn pattern_covers(pattern: &str, target: &str) -> bool {
    match (Target::parse(pattern), Target::parse(target)) {
        (Some(p), Some(t)) => {
            p.scheme == t.scheme && p.port == t.port && host_matches(&p.host, &t.host)
        }
        _ => false,
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1
                && host.ends_with(domain)
                && host[..host.len() - domain.len()].ends_with('.')
        }
        None => pattern == host,
    }
}

/// Checks a request by name, before DNS: some grant must cover it.
pub fn check_target(grants: &[String], target: &Target) -> Result<(), String> {
    let url = target.to_string();
    if grants.iter().any(|g| pattern_covers(g, &url)) {
        Ok(())
    } else {
        Err(format!("{url} is not in the bot's http grant"))
    }
}

/// Checks the address a granted name resolved to: loopback, private,
/// link-local, metadata and other special addresses are refused unless a
/// grant names that very address (and port).
pub fn check_address(grants: &[String], target: &Target, addr: IpAddr) -> Result<(), String> {
    let Some(class) = special_class(addr) else {
        return Ok(());
    };
    let by_address = Target {
        host: addr.to_string(),
        ..target.clone()
    }
    .to_string();
    if grants
        .iter()
        .any(|g| Target::parse(g).is_some_and(|p| p.to_string() == by_address))
    {
        Ok(())
    } else {
        Err(format!(
            "{target} resolved to {addr}, a {class} address; grant {by_address} to allow it"
        ))
    }
}

/// The kind of special address `addr` is, if any.
pub fn special_class(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.octets() == [169, 254, 169, 254] || v4.octets() == [100, 100, 100, 200] {
                Some("cloud metadata")
            } else if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified()
                || a == 0
                || v4.is_broadcast()
                || v4.is_multicast()
                || a >= 240
            {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_class(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.segments() == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254] {
                Some("cloud metadata")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("reserved")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn targets_parse_with_default_ports() {
        assert_eq!(
            t("https://API.example.com/x?y").to_string(),
            "https://api.example.com:443"
        );
        assert_eq!(t("http://[::1]:8080/").to_string(), "http://[::1]:8080");
        assert_eq!(t("http://user@h:81").port, 81);
        assert!(Target::parse("api.example.com").is_none());
    }

    #[test]
    fn grants_match_scheme_host_and_port() {
        let grants = vec![
            "https://api.example.com:443".to_string(),
            "https://*.svc.example:8443".to_string(),
        ];
        assert!(check_target(&grants, &t("https://api.example.com/v1")).is_ok());
        assert!(
            check_target(&grants, &t("http://api.example.com/v1")).is_err(),
            "scheme"
        );
        assert!(
            check_target(&grants, &t("https://api.example.com:444")).is_err(),
            "port"
        );
        assert!(
            check_target(&grants, &t("https://evil.com")).is_err(),
            "host"
        );
        assert!(
            check_target(&grants, &t("https://a.svc.example:8443")).is_ok(),
            "wildcard"
        );
        assert!(
            check_target(&grants, &t("https://svc.example:8443")).is_err(),
            "wildcard needs a subdomain"
        );
        assert!(
            check_target(&grants, &t("https://xsvc.example:8443")).is_err(),
            "wildcard is per label"
        );
    }

    #[test]
    fn special_addresses_are_refused_unless_named() {
        let grants = vec![
            "https://api.example.com:443".to_string(),
            "http://127.0.0.1:8081".to_string(),
        ];
        let api = t("https://api.example.com");
        for (addr, class) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("fd12::1", "private"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("169.254.169.254", "cloud metadata"),
            ("fd00:ec2::254", "cloud metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("0.0.0.0", "reserved"),
        ] {
            let err = check_address(&grants, &api, addr.parse().unwrap()).unwrap_err();
            assert!(err.contains(class), "{addr}: {err}");
        }
        assert!(check_address(&grants, &api, "93.184.216.34".parse().unwrap()).is_ok());
        let named = t("http://127.0.0.1:8081");
        assert!(
            check_address(&grants, &named, "127.0.0.1".parse().unwrap()).is_ok(),
            "named by address"
        );
        let other_port = t("http://127.0.0.1:8082");
        assert!(check_address(&grants, &other_port, "127.0.0.1".parse().unwrap()).is_err());
    }
}
