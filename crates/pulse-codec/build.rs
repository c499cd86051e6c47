//! Compiles ../../proto with protox (pure Rust; no protoc needed) and generates prost types with
//! serde derives, so the JSON encoding of canonical records, alerts and changelog records has the
//! same fields as the protobuf one by construction. A oneof is an object keyed by the variant's
//! field name, e.g. `{"record": {"tick": {...}}}`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "pulse/v1/input.proto",
        "pulse/v1/canonical.proto",
        "pulse/v1/alert.proto",
        "pulse/v1/changelog.proto",
        "pulse/v1/erasure.proto",
    ];
    println!("cargo:rerun-if-changed=../../proto");
    let fds = protox::compile(files, ["../../proto"])?;
    let mut config = prost_build::Config::new();
    config
        .btree_map(["."])
        .message_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        // proto3's JSON mapping: bytes are a base64 string (serde's default, an array of
        // numbers, would triple the size of every changelog snapshot).
        .field_attribute(
            ".pulse.v1.CustomerSnapshot.state",
            "#[serde(with = \"crate::changelog::base64_bytes\")]",
        )
        .enum_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"snake_case\")]",
        );
    config.compile_fds(fds)?;
    Ok(())
}
