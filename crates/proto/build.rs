//! Compiles `proto/tributary/v1/*.proto` with protox, a pure-Rust protobuf
//! compiler, so a fresh machine needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "telemetry.proto",
        "registry.proto",
        "query.proto",
        "command.proto",
        "command_routing.proto",
        "events.proto",
        "directory.proto",
        "dlq.proto",
        "rules.proto",
    ]
    .map(|f| root.join("tributary/v1").join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;

    // The encoded descriptor set serves gRPC reflection.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tributary_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
