//! `load` and `LocalSource`: reading files, reporting each change once, never publishing a
//! half-written file, and following ConfigMap-style symlink swaps.

use std::fs;
use std::path::Path;

use super::*;

#[test]
fn load_reads_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.yaml");
    fs::write(&path, SEED).unwrap();
    assert_eq!(load(&path).unwrap().workload_count(), 2);

    let missing = dir.path().join("missing.yaml");
    let e = load(&missing).unwrap_err();
    assert!(matches!(e, LocalConfigError::Read { .. }));
    assert!(e.to_string().contains("missing.yaml"), "{e}");

    let e = load(dir.path()).unwrap_err();
    assert!(
        matches!(e, LocalConfigError::Read { .. }),
        "a directory: {e}"
    );

    fs::write(&path, b"workloads:\n- uid: \xff\xfe\n").unwrap();
    assert!(
        matches!(load(&path).unwrap_err(), LocalConfigError::Yaml { .. }),
        "not UTF-8"
    );

    // A sparse file: the size check refuses it without reading 64 MiB.
    let huge = dir.path().join("huge.yaml");
    fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_FILE_BYTES + 1)
        .unwrap();
    let e = load(&huge).unwrap_err();
    assert!(
        matches!(e, LocalConfigError::TooLarge { size, .. } if size == MAX_FILE_BYTES + 1),
        "{e}"
    );
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

/// After a change, the first read only notes it (a writer may be half way); the second read
/// of the same content applies it.
fn settle(src: &mut LocalSource) -> Result<Option<Snapshot>, LocalConfigError> {
    assert!(
        src.reload_if_changed().unwrap().is_none(),
        "a change is applied only when two reads agree"
    );
    src.reload_if_changed()
}

#[test]
fn local_source_reports_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.yaml");
    write(&path, SEED);
    let mut src = LocalSource::new(&path);
    assert_eq!(src.path(), path);

    let first = src
        .reload_if_changed()
        .unwrap()
        .expect("first read publishes at once");
    assert_eq!(first.workload_count(), 2);
    assert!(src.reload_if_changed().unwrap().is_none(), "unchanged");

    write(
        &path,
        &format!("{SEED}\n# an edit that changes nothing but bytes\n"),
    );
    assert!(settle(&mut src).unwrap().is_some(), "valid edit");
    assert!(src.reload_if_changed().unwrap().is_none());

    write(&path, "workloads: [");
    let e = settle(&mut src).expect_err("broken edit");
    assert!(matches!(e, LocalConfigError::Yaml { .. }), "{e}");
    assert!(
        src.reload_if_changed().unwrap().is_none(),
        "same broken content: reported once"
    );
    assert!(src.reload_if_changed().unwrap().is_none());

    write(
        &path,
        "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], services: {}}\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.2], services: {}}\n",
    );
    assert!(
        matches!(settle(&mut src), Err(LocalConfigError::Snapshot(_))),
        "another broken content"
    );
    assert!(src.reload_if_changed().unwrap().is_none());

    write(
        &path,
        "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], services: {}}\n",
    );
    let fixed = settle(&mut src).unwrap().expect("fix publishes");
    assert_eq!(fixed.workload_count(), 1);

    fs::remove_file(&path).unwrap();
    assert!(
        matches!(settle(&mut src), Err(LocalConfigError::Read { .. })),
        "file gone"
    );
    assert!(
        src.reload_if_changed().unwrap().is_none(),
        "same read failure: reported once"
    );
    write(
        &path,
        "workloads:\n- {uid: u1, namespace: ns, workloadIps: [10.0.0.1], services: {}}\n",
    );
    assert!(settle(&mut src).unwrap().is_some(), "back: republished");
}

/// A writer caught half way (the file truncated, then written) never publishes the
/// intermediate content: only what two consecutive reads agree on.
#[test]
fn local_source_never_publishes_a_half_written_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.yaml");
    write(&path, SEED);
    let mut src = LocalSource::new(&path);
    assert_eq!(
        src.reload_if_changed().unwrap().unwrap().workload_count(),
        2
    );
    // Truncated: seen once, not applied; then the full new content lands before the next read.
    write(&path, "");
    assert!(src.reload_if_changed().unwrap().is_none());
    write(&path, &format!("{SEED}\n# edited\n"));
    assert!(
        src.reload_if_changed().unwrap().is_none(),
        "new content seen once"
    );
    let s = src
        .reload_if_changed()
        .unwrap()
        .expect("stable content applies");
    assert_eq!(
        s.workload_count(),
        2,
        "the empty intermediate state was never published"
    );
}

#[test]
fn local_source_sees_configmap_style_symlink_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1.yaml"), dir.path().join("v2.yaml"));
    write(&v1, SEED);
    write(&v2, "{}");
    let link = dir.path().join("local.yaml");
    std::os::unix::fs::symlink(&v1, &link).unwrap();
    let mut src = LocalSource::new(link.clone());
    assert_eq!(
        src.reload_if_changed().unwrap().unwrap().workload_count(),
        2
    );

    // Kubernetes swaps a `..data` symlink atomically; the file's own mtime need not change.
    let tmp = dir.path().join("local.yaml.tmp");
    std::os::unix::fs::symlink(&v2, &tmp).unwrap();
    fs::rename(&tmp, &link).unwrap();
    assert!(settle(&mut src).unwrap().unwrap().is_empty());
    assert!(src.reload_if_changed().unwrap().is_none());
}
