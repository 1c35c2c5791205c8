//! Generates the tonic/prost code for `proto/sigil/**.proto`.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate so a fresh machine needs no
//! system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single threaded; set before any codegen reads it.
    // (`set_var` is unsafe in edition 2024, so hand the path to the builder instead.)
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(
            config,
            &[
                "sigil/v1/sys",
                "sigil/v1/logical",
                "sigil/v1/kv",
                "sigil/v1/revocations",
                "sigil/cluster/v1/cluster",
                "sigil/federation/v1/federation",
                "sigil/mesh/v1/mesh",
            ]
            .map(|f| PathBuf::from(format!("proto/{f}.proto"))),
            &[PathBuf::from("proto"), protoc_bin_vendored::include_path()?],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
