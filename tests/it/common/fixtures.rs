//! Hostile files built at test time (shared with the CLI's tests).

/// A safetensors file whose 8 tensors' offsets sum past u64::MAX: the safetensors
/// crate's own length check overflows on it (a panic in debug builds), so tessera
/// must refuse it first.
pub fn overflowing_safetensors() -> Vec<u8> {
    let size = (1u64 << 61) - 1;
    let mut header = serde_json::Map::new();
    for i in 0..8u64 {
        header.insert(
            format!("t{i}"),
            serde_json::json!({"dtype": "U8", "shape": [size], "data_offsets": [i * size, (i + 1) * size]}),
        );
    }
    let text = serde_json::to_string(&header).expect("json");
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes
}
