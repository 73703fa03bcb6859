//! Compiles the .proto files with `protox` (pure Rust), so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/ganglion/v1/hub.proto"];
    let fds = protox::compile(protos, ["proto"])?;
    // No generated `HubClient::connect` constructor: it would clash with the `Connect` RPC,
    // and nodes build their channel themselves (pinned TLS).
    tonic_prost_build::configure()
        .build_transport(false)
        // Upload data as `Bytes`: decoded without a copy out of the receive
        // buffer (a 1 GiB upload copied each byte once more otherwise).
        .bytes(".ganglion.v1.UploadChunk.data")
        .compile_fds(fds)?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
