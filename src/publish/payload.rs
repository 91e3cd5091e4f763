//! The JSON payloads lookd publishes, and the commands it accepts. Pure data; docs/mqtt.md shows
//! an example of each, and a test parses those examples as these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::recommend::Recommendation;

/// `<prefix>/recommendations/<category slug>` (retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recommendations {
    /// The camera frame the scene came from.
    pub frame: u64,
    /// Capture time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub model: String,
    pub trained: bool,
    pub category: String,
    pub items: Vec<Recommendation>,
    /// Per-stage latency of this frame, milliseconds.
    pub latency_ms: StageTimes,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTimes {
    pub convert: f32,
    pub embed: f32,
    pub rank: f32,
    /// Frame captured to ranking done.
    pub total: f32,
}

/// `<prefix>/category/state` (retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryState {
    pub category: String,
    pub slug: String,
    /// Every category the cache holds, as `slug: path`.
    pub available: BTreeMap<String, String>,
}

/// `<prefix>/error` (not retained): a command that was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandError {
    pub topic: String,
    pub error: String,
    pub ts_ms: u64,
}

/// `<prefix>/stats` (not retained), every `stats-interval-s`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub uptime_s: f64,
    pub fps_in: f64,
    pub fps_processed: f64,
    pub frames_in: u64,
    /// Replaced in the hand-off before inference took them (latest wins).
    pub frames_dropped: u64,
    /// Seen but not re-embedded: the scene had not changed, or the rate limit held it.
    pub frames_skipped: u64,
    /// Could not be converted (corrupt, truncated, wrong size).
    pub frames_bad: u64,
    pub inferences: u64,
    pub camera_errors: u64,
    pub camera: String,
    pub broker: String,
    pub reconnects: u64,
    pub category: String,
    pub cache_products: usize,
    /// Resident memory of the process, KiB (0 where /proc is missing).
    pub rss_kb: u64,
    /// p50 and p95 per stage over the last interval, milliseconds.
    pub latency_ms: BTreeMap<String, [f32; 2]>,
}

/// What the kiosk can ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `<prefix>/category/set`: a category's path, slug or name, as plain text or
    /// `{"category": "..."}`.
    SetCategory(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryJson {
    category: String,
}

/// Decodes a command payload. `suffix` is the topic after the prefix. Pure, so it is fuzzed.
pub fn decode_command(suffix: &str, payload: &[u8], max_len: usize) -> Result<Command, String> {
    if suffix != "category/set" {
        return Err(format!("unknown command topic {suffix:?}"));
    }
    if payload.len() > max_len {
        return Err(format!("payload of {} bytes is over the {max_len}-byte limit", payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8 text".to_string())?.trim();
    let name = if text.starts_with('{') {
        serde_json::from_str::<CategoryJson>(text).map_err(|e| format!("bad JSON: {e}"))?.category
    } else {
        text.to_string()
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("empty category".into());
    }
    if name.len() > 200 || name.chars().any(char::is_control) {
        return Err("category name has control characters or is too long".into());
    }
    Ok(Command::SetCategory(name.to_string()))
}

pub use crate::catalog::slug;

#[cfg(test)]
mod tests {
    use super::*;

    fn check(payload: &[u8], expected: Result<&str, &str>) {
        let got = decode_command("category/set", payload, 64);
        match expected {
            Ok(name) => assert_eq!(got, Ok(Command::SetCategory(name.into()))),
            Err(prefix) => assert!(got.as_ref().is_err_and(|e| e.starts_with(prefix)), "{got:?}"),
        }
    }

    #[test]
    fn category_commands() {
        check(b"shoes", Ok("shoes"));
        check(b"  Apparel & Accessories|Shoes \n", Ok("Apparel & Accessories|Shoes"));
        check(br#"{"category": "pants"}"#, Ok("pants"));
        check(br#"{"category": "pants", "x": 1}"#, Err("bad JSON"));
        check(b"", Err("empty category"));
        check(b"\xff\xfe", Err("payload is not UTF-8"));
        check(&[b'a'; 65], Err("payload of 65 bytes is over the 64-byte limit"));
        check(b"sho\x07es", Err("category name has control"));
        assert!(decode_command("category/get", b"x", 64).is_err());
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Apparel & Accessories|Clothing|Shirts & Tops"), "shirts-tops");
        assert_eq!(slug("Apparel & Accessories|Shoes"), "shoes");
        assert_eq!(slug("Apparel & Accessories|Handbags, Wallets & Cases"), "handbags-wallets-cases");
    }
}
