//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and keeps
//! the encoded descriptor set so the server can answer reflection requests.

use std::{env, fs, path::PathBuf};

const PROTO: &str = "proto/cherry/bridge/v1/bridge.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_file(PROTO)?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("bridge_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    // Every service decodes through the bridge's own codec, which refuses
    // an unreadable message as INVALID_ARGUMENT (see src/grpc/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::BridgeCodec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
