//! The fuzz targets' seed corpora (`fuzz/corpus/<target>/`), run as a regular test through the
//! same entry functions cargo-fuzz calls (`zring::fuzzing`), so CI exercises every seed and
//! every regression input without cargo-fuzz or a nightly compiler.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seeds` (re)writes the generated seeds,
//! which the files in `fuzz_corpus/` build, one per kind: `http2` (HTTP/2 frames), `text`
//! (authorities, headers, identities, local YAML), `certs` (certificates with hostile SANs) and
//! `xds` (protobuf resources and responses).

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use zring::fuzzing::TARGETS;

// The frame writer of the hostile tests builds the HTTP/2 seeds.
#[allow(dead_code)]
#[path = "hostile/h2raw.rs"]
mod h2raw;

#[path = "fuzz_corpus/certs.rs"]
mod certs;
#[path = "fuzz_corpus/dns.rs"]
mod dns;
#[path = "fuzz_corpus/http2.rs"]
mod http2;
#[path = "fuzz_corpus/text.rs"]
mod text;
#[path = "fuzz_corpus/xds.rs"]
mod xds;

/// Generated seeds: (file name, contents).
type Seeds = Vec<(String, Vec<u8>)>;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The regular files of one corpus directory (libFuzzer's working copies live in `.cache/`,
/// which is ignored by git and by this test).
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every entry function has a cargo-fuzz target calling it and a corpus of its own, and every
/// target file belongs to an entry function.
#[test]
fn every_target_has_a_fuzz_binary_and_seeds() {
    let listed: BTreeSet<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    let files: BTreeSet<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    assert_eq!(
        files.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        listed,
        "fuzz/fuzz_targets/*.rs and zring::fuzzing::TARGETS differ"
    );
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in listed {
        let source =
            std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(
            source.contains(&format!("zring::fuzzing::{name}(data)")),
            "fuzz_targets/{name}.rs does not call zring::fuzzing::{name}"
        );
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
        let seeds = corpus(name).len();
        assert!(seeds >= 5, "fuzz/corpus/{name} has {seeds} seeds");
    }
}

/// Every committed seed goes through its target without a panic (a failed property is a
/// panic too). All failures are reported, each with its file.
#[test]
fn every_seed_passes_its_target() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, run) in TARGETS {
        for path in corpus(name) {
            let data = std::fs::read(&path).unwrap();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: {why}", path.display()));
            }
            ran += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ran >= 5 * TARGETS.len(), "only {ran} seeds ran");
}

/// The HTTP/2 seeds get where they should: well-formed requests reach zring's handler,
/// floods do not.
#[test]
fn http2_seeds_reach_the_request_handler_or_not() {
    let dir = fuzz_dir().join("corpus/hbone_server");
    for (seed, want) in [
        ("connect-data-close", 1),
        ("get", 1),
        ("no-authority", 1),
        ("continuation", 1),
        ("padded-priority", 1),
        ("continuation-flood", 0),
        ("oversized", 0),
    ] {
        let data = std::fs::read(dir.join(seed)).unwrap();
        assert_eq!(zring::fuzzing::serve_script(&data), want, "{seed}");
    }
}

#[test]
#[ignore = "writes the generated seeds into fuzz/corpus; run by hand"]
fn write_seeds() {
    for (target, seeds) in [
        ("connect_authority", text::authority()),
        ("hbone_headers", text::headers()),
        ("spiffe_identity", text::identities()),
        ("certificate_san", certs::hostile_sans()),
        ("xds_protobuf", xds::protobufs()),
        ("xds_response", xds::responses()),
        ("local_yaml", text::yaml()),
        ("hbone_server", http2::frames()),
        ("dns_message", dns::messages()),
    ] {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
