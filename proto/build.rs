//! Compiles `proto/im/v1/im.proto` with protox (a pure-Rust protobuf
//! compiler), so a fresh machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["im/v1/im.proto"], ["proto"])?;
    prost_build::Config::new()
        // `bytes` fields decode as `bytes::Bytes`: a slice of the frame
        // buffer, so a SEND body or a PUSH body is never copied.
        .bytes(["."])
        .compile_fds(fds)?;
    Ok(())
}
