//! How values become bytes in Redis.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A serde format for cached values. It must be deterministic only in the
/// sense that `decode(encode(v))` gives `v` back; every process sharing a
/// key prefix must use the same codec.
pub trait Codec: Send + Sync + 'static {
    /// Serializes a value; the error is reported to every caller.
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, String>;
    /// Deserializes a value.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String>;
}

/// JSON through `serde_json`: readable with `redis-cli`, and tolerant of
/// added fields (`#[serde(default)]`) across deploys.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|e| e.to_string())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}
