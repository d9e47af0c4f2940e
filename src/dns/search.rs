//! The search list of a resolv.conf, for resolving workloads addressed by hostname
//! (`dns::ondemand`) the way ztunnel does: ztunnel resolves them with hickory's resolver built
//! from the node proxy's own `/etc/resolv.conf` (`read_system_conf`), so a hostname that is
//! not fully qualified goes through the `search` domains and `options ndots:N` found there, as
//! libc would expand it. Pure: text in, names out.
//!
//! The rules (hickory's `build_names`, which agree with glibc's `res_search`):
//! - a name ending in a dot is fully qualified: asked as it is, alone;
//! - a name with at least `ndots` dots is asked as it is first, then with each search domain
//!   appended in the file's order;
//! - a name with fewer dots is asked with each search domain appended first, as it is last.
//!
//! In a Kubernetes pod (ztunnel's DaemonSet, `dnsPolicy: ClusterFirst`) the file says
//! `search <ns>.svc.cluster.local svc.cluster.local cluster.local` and `options ndots:5`, so a
//! ServiceEntry host such as `api.example.com` is first tried under the cluster's domains and
//! then as it is, and a short host such as `db.other-ns` resolves to the cluster's service.
//!
//! resolv.conf details followed (resolv.conf(5)): `domain` and `search` are alternatives, the
//! last one in the file wins, and `domain X` is a search list of one; `ndots` defaults to 1 and
//! is capped at 15. Unlike hickory, the system's host name is not used as a domain when the
//! file names none (a pod's host name has no domain part anyway).

/// Most search domains used (glibc's historical `MAXDNSRCH`; hickory has no limit, but a
/// resolv.conf with more is broken, and each domain costs a round trip per lookup).
pub const MAX_DOMAINS: usize = 6;
/// glibc caps `ndots` here (`RES_MAXNDOTS`).
pub const MAX_NDOTS: usize = 15;

/// The search list and `ndots` of one resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchList {
    /// Lowercase, without dots around, in the file's order.
    domains: Vec<String>,
    ndots: usize,
}

impl Default for SearchList {
    /// No domains, `ndots:1`: every name is asked as it is, alone.
    fn default() -> SearchList {
        SearchList {
            domains: Vec::new(),
            ndots: 1,
        }
    }
}

impl SearchList {
    /// The search list of a resolv.conf text. Lines it cannot use are skipped, as libc skips
    /// them: a bad `ndots` value leaves the default.
    pub fn parse(resolv_conf: &str) -> SearchList {
        let mut out = SearchList::default();
        for line in resolv_conf.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("search") => out.domains = domains(words),
                Some("domain") => out.domains = domains(words.take(1)),
                Some("options") => {
                    for opt in words {
                        if let Some(n) = opt.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                            out.ndots = usize::min(n, MAX_NDOTS);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The names to ask for `host`, in order (see the module doc). `host` as written by
    /// istiod; an empty or dot-only host gives no name.
    pub fn candidates(&self, host: &str) -> Vec<String> {
        if let Some(fqdn) = host.strip_suffix('.') {
            return if fqdn.is_empty() {
                Vec::new()
            } else {
                vec![fqdn.to_owned()]
            };
        }
        if host.is_empty() {
            return Vec::new();
        }
        let expanded = self.domains.iter().map(|d| format!("{host}.{d}"));
        let as_is = std::iter::once(host.to_owned());
        let dots = host.bytes().filter(|b| *b == b'.').count();
        let mut out: Vec<String> = if dots >= self.ndots {
            as_is.chain(expanded).collect()
        } else {
            expanded.chain(as_is).collect()
        };
        // A domain listed twice would only repeat a question.
        let mut seen = std::collections::HashSet::new();
        out.retain(|n| seen.insert(n.to_ascii_lowercase()));
        out
    }

    pub fn ndots(&self) -> usize {
        self.ndots
    }

    pub fn domains(&self) -> &[String] {
        &self.domains
    }
}

/// Search domains as written: lowercase, dots around trimmed, empty ones and `.` dropped, at
/// most [`MAX_DOMAINS`].
fn domains<'a>(words: impl Iterator<Item = &'a str>) -> Vec<String> {
    words
        .map(|w| w.trim_matches('.').to_ascii_lowercase())
        .filter(|w| !w.is_empty())
        .take(MAX_DOMAINS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBE: &str = "search istio-system.svc.cluster.local svc.cluster.local cluster.local\n\
                        nameserver 10.96.0.10\n\
                        options ndots:5\n";

    #[test]
    fn kubernetes_pod_resolv_conf() {
        let s = SearchList::parse(KUBE);
        assert_eq!(s.ndots(), 5);
        assert_eq!(
            s.domains(),
            [
                "istio-system.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(
            s.candidates("api.example.com"),
            [
                "api.example.com.istio-system.svc.cluster.local",
                "api.example.com.svc.cluster.local",
                "api.example.com.cluster.local",
                "api.example.com",
            ],
            "fewer dots than ndots: the search domains first"
        );
        assert_eq!(
            s.candidates("api.example.com."),
            ["api.example.com"],
            "fully qualified: alone"
        );
        assert_eq!(
            s.candidates("a.b.c.d.e.f")[0],
            "a.b.c.d.e.f",
            "ndots reached: as it is first"
        );
    }

    #[test]
    fn without_search_domains_a_name_is_asked_as_it_is() {
        for text in ["", "nameserver 10.255.255.53\n", "options ndots:3\n"] {
            let s = SearchList::parse(text);
            assert_eq!(s.candidates("db.hosts.test"), ["db.hosts.test"], "{text:?}");
            assert_eq!(s.candidates("db"), ["db"], "{text:?}");
        }
        assert!(SearchList::default().candidates("").is_empty());
        assert!(SearchList::default().candidates(".").is_empty());
    }

    #[test]
    fn resolv_conf_details() {
        // The last of `search` and `domain` wins; `domain` takes one name.
        let s = SearchList::parse("search a.test b.test\ndomain corp.test other.test\n");
        assert_eq!(s.domains(), ["corp.test"]);
        let s = SearchList::parse("domain corp.test\nsearch A.test. b.test\n");
        assert_eq!(s.domains(), ["a.test", "b.test"]);
        // Default ndots 1: one dot is enough to go first.
        assert_eq!(s.candidates("x.y"), ["x.y", "x.y.a.test", "x.y.b.test"]);
        assert_eq!(s.candidates("x"), ["x.a.test", "x.b.test", "x"]);
        // Comments, a bad ndots, a huge one, too many domains, a repeated one.
        let s = SearchList::parse(
            "# search no.test\nsearch d1 d2 d3 d4 d5 d6 d7 ; d8\noptions ndots:x rotate\n",
        );
        assert_eq!(s.ndots(), 1);
        assert_eq!(s.domains().len(), MAX_DOMAINS);
        assert_eq!(SearchList::parse("options ndots:99").ndots(), MAX_NDOTS);
        let s = SearchList::parse("search same.test same.test\n");
        assert_eq!(s.candidates("x"), ["x.same.test", "x"]);
    }
}
