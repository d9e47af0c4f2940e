//! The character rules for names that end up inside identities, keys and headers. Pure; used
//! by `SnapshotBuilder::build` so every config source (local YAML now, xDS later) is held to
//! the same rules.
//!
//! Why these rules: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>` must mean
//! exactly one identity, `namespace/hostname` and `namespace/name` must split exactly one way,
//! and free text (workload names, canonical revisions) is copied into HTTP headers and metric
//! labels, where a control character would corrupt the line. The charsets are Kubernetes'
//! own (namespaces are RFC 1123 labels, service accounts RFC 1123 subdomains) and SPIFFE's
//! (trust domains), so nothing a real cluster produces is refused.
//!
//! Each check returns the reason as a `&'static str`, so callers can name the culprit.

/// A namespace: an RFC 1123 label (lowercase letters, digits, '-'; alphanumeric at both ends;
/// at most 63 characters).
pub fn check_namespace(s: &str) -> Result<(), &'static str> {
    RFC1123_LABEL.check(s)
}

/// A service account: an RFC 1123 subdomain (lowercase letters, digits, '-', '.';
/// alphanumeric at both ends; at most 253 characters).
pub fn check_service_account(s: &str) -> Result<(), &'static str> {
    RFC1123_SUBDOMAIN.check(s)
}

/// A SPIFFE trust domain: lowercase letters, digits, '.', '-', '_'; at most 255 characters.
pub fn check_trust_domain(s: &str) -> Result<(), &'static str> {
    TRUST_DOMAIN.check(s)
}

/// A service hostname: letters, digits, '.', '-', '_' and '*' (ServiceEntry wildcards); at
/// most 253 characters. No '/', so `namespace/hostname` splits one way.
pub fn check_hostname(s: &str) -> Result<(), &'static str> {
    HOSTNAME.check(s)
}

/// An object name (service, policy): letters, digits, '.', '-', '_' (istiod names synthetic
/// policies with '_'); at most 253 characters. No '/', so `namespace/name` splits one way.
pub fn check_object_name(s: &str) -> Result<(), &'static str> {
    OBJECT_NAME.check(s)
}

/// A network name: anything printable without '/' or whitespace, because it is the first half
/// of the `network/IP` form.
pub fn check_network(s: &str) -> Result<(), &'static str> {
    refuse_chars(
        s,
        |c| c == '/' || c.is_whitespace() || c.is_control(),
        "must not contain '/', whitespace or control characters",
    )
}

/// Free text copied into headers, logs and metric labels: no control characters (NUL, CR, LF,
/// tab, DEL and the C1 range).
pub fn check_text(s: &str) -> Result<(), &'static str> {
    refuse_chars(s, char::is_control, "must not contain control characters")
}

/// The one rule behind every name: not empty, at most `max_len` bytes, only bytes `allowed`
/// says, and (for Kubernetes' RFC 1123 names) a letter or digit at both ends. The reasons are
/// fields because a `&'static str` cannot be formatted with the limit.
struct NameRule {
    max_len: usize,
    too_long: &'static str,
    allowed: fn(u8) -> bool,
    outside: &'static str,
    alnum_ends: bool,
}

const RFC1123_LABEL: NameRule = NameRule {
    max_len: 63,
    too_long: "longer than 63 characters",
    allowed: |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
    outside: "only lowercase letters, digits and '-' are allowed (an RFC 1123 label)",
    alnum_ends: true,
};

const RFC1123_SUBDOMAIN: NameRule = NameRule {
    max_len: 253,
    too_long: "longer than 253 characters",
    allowed: |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.',
    outside: "only lowercase letters, digits, '-' and '.' are allowed (an RFC 1123 subdomain)",
    alnum_ends: true,
};

const TRUST_DOMAIN: NameRule = NameRule {
    max_len: 255,
    too_long: "longer than 255 characters",
    allowed: |b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'),
    outside: "only lowercase letters, digits, '.', '-' and '_' are allowed (SPIFFE)",
    alnum_ends: false,
};

const HOSTNAME: NameRule = NameRule {
    max_len: 253,
    too_long: "longer than 253 characters",
    allowed: |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'),
    outside: "only letters, digits, '.', '-', '_' and '*' are allowed",
    alnum_ends: false,
};

const OBJECT_NAME: NameRule = NameRule {
    max_len: 253,
    too_long: "longer than 253 characters",
    allowed: |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'),
    outside: "only letters, digits, '.', '-' and '_' are allowed",
    alnum_ends: false,
};

impl NameRule {
    fn check(&self, s: &str) -> Result<(), &'static str> {
        let b = s.as_bytes();
        let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
            return Err("must not be empty");
        };
        if b.len() > self.max_len {
            return Err(self.too_long);
        }
        if !b.iter().all(|&c| (self.allowed)(c)) {
            return Err(self.outside);
        }
        if self.alnum_ends && !(first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()) {
            return Err("must start and end with a letter or digit");
        }
        Ok(())
    }
}

/// The one rule behind free text: any characters but those `bad` says.
fn refuse_chars(s: &str, bad: fn(char) -> bool, why: &'static str) -> Result<(), &'static str> {
    if s.chars().any(bad) {
        return Err(why);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        for ok in ["default", "istio-system", "a", "ns1", &"a".repeat(63)] {
            assert_eq!(check_namespace(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Default",
            "a.b",
            "a/b",
            "a b",
            "-a",
            "a-",
            "a_b",
            "a\0",
            &"a".repeat(64),
        ] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn service_accounts() {
        for ok in ["default", "appa", "sa.with.dots", "a-b", "0"] {
            assert_eq!(check_service_account(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/b",
            "a b",
            ".a",
            "a.",
            "a\n",
            "a_b",
            &"a".repeat(254),
        ] {
            assert!(check_service_account(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trust_domains() {
        for ok in ["cluster.local", "td", "example_org", "a-b.c"] {
            assert_eq!(check_trust_domain(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Cluster.local", "a/b", "a b", "td:1", "é"] {
            assert!(check_trust_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostnames_and_names() {
        assert_eq!(check_hostname("appb.default.svc.cluster.local"), Ok(()));
        assert_eq!(check_hostname("*.example.com"), Ok(()));
        for bad in ["", "a/b", "a b", "a\0b", "a:80"] {
            assert!(check_hostname(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_object_name("istio_converted_static_strict"), Ok(()));
        for bad in ["", "a/b", "a b", "a\tb"] {
            assert!(check_object_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_network(""), Ok(()));
        assert!(check_network("a/b").is_err());
        assert_eq!(check_text("appa-7d4f v1.2"), Ok(()));
        assert!(check_text("a\r\nb").is_err());
    }

    /// Each reason names the first rule broken, in the order empty, length, charset, ends.
    #[test]
    fn reasons_name_the_first_rule_broken() {
        assert_eq!(check_namespace(""), Err("must not be empty"));
        assert_eq!(
            check_namespace(&"-".repeat(64)),
            Err("longer than 63 characters")
        );
        assert_eq!(
            check_namespace("A-"),
            Err("only lowercase letters, digits and '-' are allowed (an RFC 1123 label)")
        );
        assert_eq!(
            check_service_account("a."),
            Err("must start and end with a letter or digit")
        );
        assert_eq!(
            check_trust_domain(&"a".repeat(256)),
            Err("longer than 255 characters")
        );
        assert_eq!(check_trust_domain("-td-"), Ok(()));
        assert_eq!(check_object_name("-a_"), Ok(()));
        assert_eq!(
            check_network("a b"),
            Err("must not contain '/', whitespace or control characters")
        );
    }
}
