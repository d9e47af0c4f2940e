//! Compiles `proto/` into Rust at build time: protox parses the .proto files in pure Rust (no
//! system `protoc`), tonic-prost-build generates prost messages and the gRPC client stubs.
//! `zds.proto` (istio-cni's node-agent protocol) has no service: only its messages are generated.
//!
//! Server stubs are generated too, but only compiled into the crate's unit tests
//! (`#[cfg(test)]` on every server module): the fake istiod and fake CA in the tests are real
//! tonic servers, while the shipped binary carries only clients.
//!
//! It also records build facts for `/config_dump`'s `version` and the build-info metric: the
//! compiler's version and the cargo profile (`ZRING_BUILD_RUSTC`, `ZRING_BUILD_PROFILE`), and
//! `ZRING_GIT_REVISION` when the environment of the build names one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &[
        "proto/istio/workload.proto",
        "proto/istio/authorization.proto",
        "proto/istio/ca.proto",
        "proto/envoy/base.proto",
        "proto/envoy/discovery.proto",
        "proto/google/rpc/status.proto",
        "proto/zds.proto",
    ];
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ZRING_BUILD_RUSTC={version}");
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=ZRING_BUILD_PROFILE={profile}");
    println!("cargo:rerun-if-env-changed=ZRING_GIT_REVISION");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .server_mod_attribute(".", "#[cfg(test)]")
        .include_file("protos.rs")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
