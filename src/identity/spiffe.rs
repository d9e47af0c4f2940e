//! The SPIFFE identity type and its strict parser.
//!
//! Pure code, runs on any thread. An [`Identity`] only exists if its text passed [`Identity::parse`]:
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, nothing more, nothing less.
//! Parsing is strict because identities come from peers' certificates and decide authorization:
//! any ambiguity (case, percent-encoding, extra segments, control bytes) would let two spellings
//! name one principal, or one spelling name two.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use super::Error;
use crate::state::Workload;

/// Upper bound on the length of an identity's text, checked before anything else so hostile
/// input is rejected without scanning it. The segment limits below make the real maximum
/// 9 + 255 + 4 + 63 + 4 + 253 = 588 bytes; this bound is the documented contract.
pub const MAX_IDENTITY_LEN: usize = 2048;

const SCHEME: &str = "spiffe://";
/// SPIFFE-ID spec: trust domains are at most 255 bytes.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Kubernetes namespaces are DNS-1123 labels.
const MAX_NAMESPACE_LEN: usize = 63;
/// Kubernetes service accounts are DNS-1123 subdomains.
const MAX_SERVICE_ACCOUNT_LEN: usize = 253;

/// A workload's SPIFFE identity.
///
/// Cloning is a reference-count increment: identities travel in pool keys, connection records and
/// metrics labels. Equality, ordering and hashing are those of the full URI text.
#[derive(Clone)]
pub struct Identity {
    /// The full URI, shared so clones are cheap.
    uri: Arc<str>,
    /// End of the trust domain (it starts right after the scheme).
    trust_domain_end: u16,
    /// Start and end of the namespace segment.
    namespace: (u16, u16),
    /// Start of the service account segment (it runs to the end).
    service_account_start: u16,
}

/// Byte offsets found by the parser, before the text is copied into an `Arc`.
struct Layout {
    trust_domain_end: u16,
    namespace: (u16, u16),
    service_account_start: u16,
}

impl Identity {
    /// Builds the identity for a trust domain, namespace and service account, validating each.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, Error> {
        format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The identity `w` runs as (its trust domain, namespace and service account): the one way
    /// from a workload to its SPIFFE identity, for certificates, TLS peers, policy subjects and
    /// logs. It lives here, not on `Workload`, because `identity` builds on `state`.
    pub fn of_workload(w: &Workload) -> Result<Self, Error> {
        let (trust_domain, namespace, service_account) = w.identity_parts();
        Self::new(trust_domain, namespace, service_account)
    }

    /// Parses `text` strictly. Same as `text.parse()`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let layout = layout(text)?;
        Ok(Identity {
            uri: Arc::from(text),
            trust_domain_end: layout.trust_domain_end,
            namespace: layout.namespace,
            service_account_start: layout.service_account_start,
        })
    }

    /// The whole `spiffe://…` URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..usize::from(self.trust_domain_end)]
    }

    pub fn namespace(&self) -> &str {
        let (start, end) = self.namespace;
        &self.uri[usize::from(start)..usize::from(end)]
    }

    pub fn service_account(&self) -> &str {
        &self.uri[usize::from(self.service_account_start)..]
    }

    /// The identity without its scheme (`<td>/ns/<ns>/sa/<sa>`), the form Istio authorization
    /// policies use for principals.
    pub fn principal(&self) -> &str {
        &self.uri[SCHEME.len()..]
    }
}

/// Validates `text` and finds its segments. Every check is on bytes of a known-ASCII alphabet,
/// so slicing at the returned offsets can never split a UTF-8 character.
fn layout(text: &str) -> Result<Layout, Error> {
    if text.len() > MAX_IDENTITY_LEN {
        return Err(Error::InvalidIdentity("longer than 2048 bytes"));
    }
    let Some(rest) = text.strip_prefix(SCHEME) else {
        return Err(Error::InvalidIdentity("scheme is not `spiffe://`"));
    };
    let Some((trust_domain, path)) = rest.split_once('/') else {
        return Err(Error::InvalidIdentity("no path after the trust domain"));
    };
    check_trust_domain(trust_domain)?;

    // The path must be exactly four segments: "ns", <namespace>, "sa", <service account>.
    let mut segments = path.split('/');
    let (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(Error::InvalidIdentity(
            "path is not /ns/<namespace>/sa/<service-account>",
        ));
    };
    if !is_dns_label(namespace, MAX_NAMESPACE_LEN) {
        return Err(Error::InvalidIdentity(
            "namespace is not a DNS-1123 label (lowercase letters, digits, '-')",
        ));
    }
    if !is_dns_subdomain(service_account, MAX_SERVICE_ACCOUNT_LEN) {
        return Err(Error::InvalidIdentity(
            "service account is not a DNS-1123 subdomain (lowercase letters, digits, '-', '.')",
        ));
    }

    // Offsets fit in u16: the total length was bounded above.
    let trust_domain_end = SCHEME.len() + trust_domain.len();
    let namespace_start = trust_domain_end + "/ns/".len();
    let namespace_end = namespace_start + namespace.len();
    let service_account_start = namespace_end + "/sa/".len();
    let offset = |n: usize| u16::try_from(n).map_err(|_| Error::InvalidIdentity("too long"));
    Ok(Layout {
        trust_domain_end: offset(trust_domain_end)?,
        namespace: (offset(namespace_start)?, offset(namespace_end)?),
        service_account_start: offset(service_account_start)?,
    })
}

/// SPIFFE-ID spec: a trust domain is lowercase letters, digits, dots, dashes and underscores.
/// Uppercase is refused rather than folded: a name has one spelling.
fn check_trust_domain(trust_domain: &str) -> Result<(), Error> {
    if trust_domain.is_empty() {
        return Err(Error::InvalidIdentity("empty trust domain"));
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(Error::InvalidIdentity("trust domain longer than 255 bytes"));
    }
    let allowed = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_');
    if !trust_domain.bytes().all(allowed) {
        return Err(Error::InvalidIdentity(
            "trust domain has a byte outside [a-z0-9._-]",
        ));
    }
    Ok(())
}

/// RFC 1123 label as Kubernetes validates it: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns_label(label: &str, max_len: usize) -> bool {
    let bytes = label.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= max_len
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// RFC 1123 subdomain as Kubernetes validates it: dot-separated labels, 253 bytes at most.
fn is_dns_subdomain(name: &str, max_len: usize) -> bool {
    !name.is_empty() && name.len() <= max_len && name.split('.').all(|l| is_dns_label(l, 63))
}

impl FromStr for Identity {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        Identity::parse(text)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.uri)
    }
}

impl AsRef<str> for Identity {
    fn as_ref(&self) -> &str {
        &self.uri
    }
}

// The offsets are a function of the text, so comparing the text alone is exact.
impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.uri == other.uri
    }
}

impl Eq for Identity {}

impl Hash for Identity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uri.hash(state);
    }
}

impl PartialOrd for Identity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Identity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.uri.cmp(&other.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_identities_parse_with_their_segments() {
        let table = [
            (
                "spiffe://cluster.local/ns/default/sa/default",
                ("cluster.local", "default", "default"),
            ),
            ("spiffe://td/ns/a/sa/b", ("td", "a", "b")),
            (
                "spiffe://my_td-1.example/ns/istio-system/sa/istio-ingressgateway-service-account",
                (
                    "my_td-1.example",
                    "istio-system",
                    "istio-ingressgateway-service-account",
                ),
            ),
            (
                "spiffe://cluster.local/ns/0ns/sa/build.robot-1",
                ("cluster.local", "0ns", "build.robot-1"),
            ),
        ];
        for (text, (td, ns, sa)) in table {
            let id: Identity = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(id.as_str(), text);
            assert_eq!(id.to_string(), text);
            assert_eq!(id.trust_domain(), td, "{text}");
            assert_eq!(id.namespace(), ns, "{text}");
            assert_eq!(id.service_account(), sa, "{text}");
            assert_eq!(id.principal(), &text["spiffe://".len()..]);
            assert_eq!(Identity::new(td, ns, sa).unwrap(), id);
        }
    }

    #[test]
    fn invalid_identities_are_refused() {
        let long_sa = format!("spiffe://td/ns/a/sa/{}", "a".repeat(254));
        let long_td = format!("spiffe://{}/ns/a/sa/b", "t".repeat(256));
        let long_ns = format!("spiffe://td/ns/{}/sa/b", "n".repeat(64));
        let huge = format!("spiffe://td/ns/a/sa/{}", "a".repeat(MAX_IDENTITY_LEN));
        let table: &[&str] = &[
            "",
            "spiffe://",
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "SPIFFE://cluster.local/ns/a/sa/b",
            "Spiffe://cluster.local/ns/a/sa/b",
            "https://cluster.local/ns/a/sa/b",
            "spiffe:/cluster.local/ns/a/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://cluster.local:443/ns/a/sa/b",
            "spiffe://user@cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/a/sa/b/",
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe://cluster.local//ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/sa/b/ns/a",
            "spiffe://cluster.local/NS/a/sa/b",
            "spiffe://cluster.local/ns/a/SA/b",
            "spiffe://cluster.local/ns/A/sa/b",
            "spiffe://cluster.local/ns/a/sa/B",
            "spiffe://cluster.local/ns/a/sa/b\0",
            "spiffe://cluster.local/ns/a\0/sa/b",
            "spiffe://cluster\0.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b\n",
            "spiffe://cluster.local/ns/a/sa/b ",
            " spiffe://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a b/sa/b",
            "spiffe://cluster.local/ns/a\t/sa/b",
            "spiffe://cluster.local/ns/a/sa/b%41",
            "spiffe://cluster.local/ns/%61/sa/b",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe://cluster.local/ns/a/sa/b#frag",
            "spiffe://cluster.local/ns/./sa/b",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a/sa/..",
            "spiffe://cluster.local/ns/-a/sa/b",
            "spiffe://cluster.local/ns/a-/sa/b",
            "spiffe://cluster.local/ns/a.b/sa/b",
            "spiffe://cluster.local/ns/a/sa/.b",
            "spiffe://cluster.local/ns/a/sa/b.",
            "spiffe://cluster.local/ns/a/sa/b..c",
            "spiffe://cluster.local/ns/a/sa/b_c",
            "spiffe://cluster.local/ns/a/sa/bé",
            "spiffe://clüster.local/ns/a/sa/b",
            "spiffe://cluster.local\\ns/a/sa/b",
            &long_sa,
            &long_td,
            &long_ns,
            &huge,
        ];
        for text in table {
            assert!(
                matches!(text.parse::<Identity>(), Err(Error::InvalidIdentity(_))),
                "accepted {text:?}"
            );
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let td = "t".repeat(MAX_TRUST_DOMAIN_LEN);
        let ns = "n".repeat(MAX_NAMESPACE_LEN);
        // A 253-byte subdomain made of 63-byte labels.
        let sa = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(sa.len(), MAX_SERVICE_ACCOUNT_LEN);
        let id = Identity::new(&td, &ns, &sa).unwrap();
        assert_eq!(id.trust_domain(), td);
        assert_eq!(id.namespace(), ns);
        assert_eq!(id.service_account(), sa);
        assert!(Identity::new(&td, &ns, &format!("{}.x", "a".repeat(64))).is_err());
    }

    #[test]
    fn equality_and_hash_follow_the_text() {
        use std::collections::HashSet;
        let a: Identity = "spiffe://td/ns/a/sa/b".parse().unwrap();
        let b: Identity = "spiffe://td/ns/a/sa/b".parse().unwrap();
        let c: Identity = "spiffe://td/ns/a/sa/c".parse().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a < c);
        let set: HashSet<_> = [a.clone(), b, c].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(
            Arc::ptr_eq(&a.uri, &a.clone().uri),
            "clone must share the text"
        );
    }
}
