//! The JSON payloads lookd publishes, and the commands it accepts. Pure data; docs/mqtt.md shows
//! an example of each, and a test parses those examples as these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::Fields;
use crate::recommend::Recommendation;

/// `<prefix>/recommendations/<category slug>` (retained; deleted, by an empty retained message,
/// when lookd forgets the scene: `[privacy] forget-after-s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recommendations {
    /// The camera frame the scene came from.
    pub frame: u64,
    /// Capture time, whole seconds since the Unix epoch (what the page needs for "updated 5 s
    /// ago"; no finer, so that a ranking is not a precise record of when a shopper was there).
    pub ts: u64,
    pub model: String,
    pub trained: bool,
    pub category: String,
    pub items: Vec<Item>,
    /// Per-stage latency of this frame, milliseconds.
    pub latency_ms: StageTimes,
}

/// One ranked product as published: what the screen needs. The distances only with
/// `[privacy] exact-scores = true` (docs/privacy.md: with them, the scene embedding can be solved
/// for).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: String,
    pub rank: usize,
    pub category: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub fields: Fields,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<f32>,
}

impl Item {
    /// `r` as published: with its distances only when `exact_scores`.
    pub fn new(r: Recommendation, exact_scores: bool) -> Item {
        let score = |v: f32| exact_scores.then_some(v);
        Item {
            distance: score(r.distance),
            global: score(r.global),
            local: score(r.local),
            id: r.id,
            rank: r.rank,
            category: r.category,
            image: r.image,
            fields: r.fields,
        }
    }
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
    /// Whole seconds since the Unix epoch.
    pub ts: u64,
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
    /// The catalog's version (the fleet's, or `local`); `catalog/state` has the rest.
    pub catalog_version: String,
    /// The model running (`name@product-graph-hash`) and its product fingerprint, hex: what a
    /// fleet rolling out a model watches for.
    pub model: String,
    pub fingerprint: String,
    /// Resident memory of the process, KiB (0 where /proc is missing).
    pub rss_kb: u64,
    /// p50 and p95 per stage over the last interval, milliseconds.
    pub latency_ms: BTreeMap<String, [f32; 2]>,
}

/// `<prefix>/catalog/state` (retained): which catalog the mirror ranks from, and whether a new
/// one is being made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogState {
    /// `ready`, or `building` (a rebuild or a fleet fetch runs; the old catalog still serves).
    pub state: String,
    /// The fleet's version of the catalog served, or `local` (built on this mirror).
    pub version: String,
    /// sha256 of the cache file served: the catalog's exact identity.
    pub sha256: String,
    pub products: usize,
    pub categories: usize,
    pub model: String,
    /// The model's product fingerprint the cache was made for (hex).
    pub fingerprint: String,
    /// When the cache file was written, milliseconds since the Unix epoch.
    pub built_ms: u64,
    /// While `building`: what, and how far (rows done, rows in all; 0/0 while fetching).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Ids marked out of stock (`catalog/unavailable` and the CSV's `available` column).
    pub unavailable: usize,
    /// The mirror's restriction by catalog fields (`filter/set`, `[pipeline] filter`).
    pub filter: BTreeMap<String, Vec<String>>,
    /// Products that may be recommended: in stock and passing the filter.
    pub recommendable: usize,
    /// How long the loop paused to swap the last new catalog in, milliseconds.
    pub swap_ms: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// `first build` (a first start without a cache: the daemon serves meanwhile), `reload`
    /// (from the catalog CSV) or `fleet` (a fetch).
    pub what: String,
    pub done: usize,
    pub total: usize,
    /// Seconds left, from the pace so far (none before the first product is done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
}

/// A retained message on the fleet topic: where every mirror fetches the central catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetCatalog {
    /// The chain's name for this catalog (a date, a build number); reported back by each mirror.
    pub version: String,
    /// `http://`, `https://` or `file:` (an absolute path on the mirror, shared storage).
    pub url: String,
    /// sha256 of the cache file, hex.
    pub sha256: String,
    /// The product fingerprint of the model it was built with, hex (`lookd catalog announce`).
    pub fingerprint: String,
    /// The file's size in bytes, if known: checked before and after the fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// A new model to run, with the catalog built by it (`fingerprint` is then its product
    /// fingerprint): both are taken together or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<FleetModel>,
}

/// The model half of a fleet announcement: a model folder packed as one tar (`lookd model pack`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetModel {
    /// The manifest's model id (`name@product-graph-hash`), checked against what arrives.
    pub name: String,
    /// `http://`, `https://` or `file:`, as for the catalog.
    pub url: String,
    /// sha256 of the archive, hex.
    pub sha256: String,
    /// The archive's size in bytes, if known: checked before and after the fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// The longest `catalog/unavailable` payload, and the most ids it may hold.
pub const MAX_UNAVAILABLE_BYTES: usize = 512 * 1024;
pub const MAX_UNAVAILABLE_IDS: usize = 20_000;
/// The longest fleet message.
pub const MAX_FLEET_BYTES: usize = 4096;

/// What the kiosk, the store's systems and the chain can ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `<prefix>/category/set`: a category's path, slug or name, as plain text or
    /// `{"category": "..."}`.
    SetCategory(String),
    /// `<prefix>/catalog/reload` (any payload): rebuild the catalog (or fetch the fleet's again).
    Reload,
    /// `<prefix>/catalog/unavailable` (retained): the ids out of stock, replacing the last list;
    /// an empty payload or `[]` clears it.
    Unavailable(Vec<String>),
    /// `<prefix>/filter/set`: `{"field": ["value", ...]}`, every field must match; `{}` clears.
    SetFilter(BTreeMap<String, Vec<String>>),
    /// The fleet topic: a new central catalog to fetch.
    Fleet(FleetCatalog),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryJson {
    category: String,
}

/// Decodes a command payload. `suffix` is the topic after the prefix. Pure, so it is fuzzed.
pub fn decode_command(suffix: &str, payload: &[u8], max_len: usize) -> Result<Command, String> {
    let limit = if suffix == "catalog/unavailable" { MAX_UNAVAILABLE_BYTES.max(max_len) } else { max_len };
    if !["category/set", "catalog/reload", "catalog/unavailable", "filter/set"].contains(&suffix) {
        return Err(format!("unknown command topic {suffix:?}"));
    }
    if payload.len() > limit {
        return Err(format!("payload of {} bytes is over the {limit}-byte limit", payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8 text".to_string())?.trim();
    match suffix {
        "catalog/reload" => Ok(Command::Reload),
        "catalog/unavailable" => decode_unavailable(text),
        "filter/set" => decode_filter(text),
        _ => decode_category(text),
    }
}

fn decode_category(text: &str) -> Result<Command, String> {
    let name = if text.starts_with('{') {
        serde_json::from_str::<CategoryJson>(text).map_err(|e| format!("bad JSON: {e}"))?.category
    } else {
        text.to_string()
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("empty category".into());
    }
    if !fits(name) {
        return Err("category name has control characters or is too long".into());
    }
    Ok(Command::SetCategory(name.to_string()))
}

/// A name, id or value from a command: at most 200 bytes, no control characters.
fn fits(s: &str) -> bool {
    s.len() <= 200 && !s.chars().any(char::is_control)
}

/// `["id", ...]` or `{"ids": ["id", ...]}`; empty text clears the list (a retained message
/// deleted by its publisher arrives empty).
fn decode_unavailable(text: &str) -> Result<Command, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Ids(Vec<String>),
        Object { ids: Vec<String> },
    }
    if text.is_empty() {
        return Ok(Command::Unavailable(Vec::new()));
    }
    let ids = match serde_json::from_str::<List>(text) {
        Ok(List::Ids(ids) | List::Object { ids }) => ids,
        Err(_) => return Err("bad JSON: expected a list of product ids, [\"id\", ...]".into()),
    };
    if ids.len() > MAX_UNAVAILABLE_IDS {
        return Err(format!("{} ids is over the limit of {MAX_UNAVAILABLE_IDS}", ids.len()));
    }
    if let Some(bad) = ids.iter().find(|id| id.trim().is_empty() || !fits(id)) {
        return Err(format!("id {bad:?} is empty, too long or has control characters"));
    }
    Ok(Command::Unavailable(ids.into_iter().map(|id| id.trim().to_string()).collect()))
}

/// `{"department": ["women", "unisex"], "audience": "adult"}`: a value or a list per field.
fn decode_filter(text: &str) -> Result<Command, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Values {
        One(String),
        Many(Vec<String>),
    }
    let raw: BTreeMap<String, Values> = serde_json::from_str(text)
        .map_err(|e| format!("bad JSON: {e} (expected {{\"field\": [\"value\", ...]}})"))?;
    let mut filter = BTreeMap::new();
    for (field, values) in raw {
        let values = match values {
            Values::One(v) => vec![v],
            Values::Many(v) => v,
        };
        if field.trim().is_empty() || !fits(&field) || values.is_empty() || !values.iter().all(|v| fits(v)) {
            return Err(format!(
                "filter field {field:?}: needs a name and at least one value, each plain text"
            ));
        }
        filter.insert(field.trim().to_string(), values.iter().map(|v| v.trim().to_string()).collect());
    }
    if filter.len() > 16 {
        return Err("a filter has at most 16 fields".into());
    }
    Ok(Command::SetFilter(filter))
}

/// Decodes a fleet message: JSON, a known scheme, hex digests. Pure, so it is fuzzed.
pub fn decode_fleet(payload: &[u8]) -> Result<Command, String> {
    if payload.len() > MAX_FLEET_BYTES {
        return Err(format!("payload of {} bytes is over the {MAX_FLEET_BYTES}-byte limit", payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8 text".to_string())?;
    let f: FleetCatalog = serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex64(&f.sha256) {
        return Err("sha256 must be 64 hex digits".into());
    }
    if !hex64(&f.fingerprint) {
        return Err("fingerprint must be 64 hex digits".into());
    }
    if f.version.trim().is_empty() || !fits(&f.version) {
        return Err("version must be plain text of at most 200 bytes".into());
    }
    let bad_url = |url: &str| {
        format!(
            "url {:?}: lookd fetches http://, https:// or file:/absolute/path only",
            url.chars().take(80).collect::<String>()
        )
    };
    if scheme(&f.url).is_none() {
        return Err(bad_url(&f.url));
    }
    let model = match f.model {
        None => None,
        Some(m) => {
            if !hex64(&m.sha256) {
                return Err("model.sha256 must be 64 hex digits".into());
            }
            if m.name.trim().is_empty() || !fits(&m.name) {
                return Err("model.name must be plain text of at most 200 bytes".into());
            }
            if scheme(&m.url).is_none() {
                return Err(format!("model {}", bad_url(&m.url)));
            }
            Some(FleetModel { sha256: m.sha256.to_lowercase(), ..m })
        }
    };
    Ok(Command::Fleet(FleetCatalog {
        sha256: f.sha256.to_lowercase(),
        fingerprint: f.fingerprint.to_lowercase(),
        model,
        ..f
    }))
}

/// Where a fleet catalog lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Location<'a> {
    Http(&'a str),
    File(&'a std::path::Path),
}

/// The location `url` names, if lookd can fetch from there.
pub fn scheme(url: &str) -> Option<Location<'_>> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Some(Location::Http(url));
    }
    let path = url.strip_prefix("file://").or_else(|| url.strip_prefix("file:"))?;
    let path = std::path::Path::new(path);
    (path.is_absolute() && !url.contains('\0')).then_some(Location::File(path))
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
    fn stock_and_filter_commands() {
        let un = |p: &[u8]| decode_command("catalog/unavailable", p, 64);
        assert_eq!(un(br#"["a", " b "]"#), Ok(Command::Unavailable(vec!["a".into(), "b".into()])));
        assert_eq!(un(br#"{"ids": ["a"]}"#), Ok(Command::Unavailable(vec!["a".into()])));
        assert_eq!(un(b""), Ok(Command::Unavailable(vec![])));
        assert_eq!(un(b"[]"), Ok(Command::Unavailable(vec![])));
        assert!(un(b"a,b").is_err_and(|e| e.starts_with("bad JSON")));
        assert!(un(br#"["a", ""]"#).is_err_and(|e| e.contains("is empty")));
        // The list's own limits, not the 64-byte command limit.
        let many = serde_json::to_vec(&vec!["x"; MAX_UNAVAILABLE_IDS + 1]).unwrap();
        assert!(un(&many).is_err_and(|e| e.contains("over the limit of 20000")), "{:?}", un(&many));
        assert!(un(&vec![b' '; MAX_UNAVAILABLE_BYTES + 1]).is_err_and(|e| e.contains("-byte limit")));
        let f = |p: &[u8]| decode_command("filter/set", p, 256);
        let want = BTreeMap::from([
            ("audience".to_string(), vec!["adult".to_string()]),
            ("department".to_string(), vec!["women".to_string(), "unisex".to_string()]),
        ]);
        assert_eq!(
            f(br#"{"department": ["women", "unisex"], "audience": "adult"}"#),
            Ok(Command::SetFilter(want))
        );
        assert_eq!(f(b"{}"), Ok(Command::SetFilter(BTreeMap::new())));
        assert!(f(br#"{"department": []}"#).is_err_and(|e| e.contains("at least one value")));
        assert!(f(b"women").is_err_and(|e| e.starts_with("bad JSON")));
        assert_eq!(decode_command("catalog/reload", b"", 64), Ok(Command::Reload));
    }

    #[test]
    fn fleet_messages() {
        let sha = "ab".repeat(32);
        let msg = |url: &str| {
            format!(
                r#"{{"version": "v2", "url": "{url}", "sha256": "{}", "fingerprint": "{sha}"}}"#,
                sha.to_uppercase()
            )
        };
        let ok = decode_fleet(msg("https://hq.example/c.cache").as_bytes()).unwrap();
        let Command::Fleet(f) = ok else { panic!("{ok:?}") };
        assert_eq!((f.sha256.as_str(), f.version.as_str()), (sha.as_str(), "v2"), "digests lowercased");
        assert!(decode_fleet(msg("file:/srv/c.cache").as_bytes()).is_ok());
        assert!(decode_fleet(msg("file:///srv/c.cache").as_bytes()).is_ok());
        for bad in ["ftp://hq/c.cache", "file:relative/c.cache", "/srv/c.cache", "gopher:x"] {
            let e = decode_fleet(msg(bad).as_bytes()).unwrap_err();
            assert!(e.contains("http://, https:// or file:"), "{bad}: {e}");
        }
        assert!(decode_fleet(b"not json").is_err_and(|e| e.starts_with("bad JSON")));
        let short = msg("http://x/c").replace(&sha.to_uppercase(), "abc");
        assert!(decode_fleet(short.as_bytes()).is_err_and(|e| e.contains("64 hex digits")));
        let extra = msg("http://x/c").replace("\"version\"", "\"size\": 1, \"version\"");
        assert!(decode_fleet(extra.as_bytes()).is_err_and(|e| e.contains("unknown field")));
        assert!(decode_fleet(&vec![b' '; MAX_FLEET_BYTES + 1]).is_err_and(|e| e.contains("-byte limit")));
        assert_eq!(f.model, None);
        // With a model: its digest lowercased, its address and name checked like the catalog's.
        let with = |model: &str| {
            msg("http://x/c").replace("\"version\"", &format!("\"model\": {model}, \"version\""))
        };
        let m = format!(
            r#"{{"name": "lite0@abc", "url": "http://x/m.tar", "sha256": "{}", "bytes": 9}}"#,
            sha.to_uppercase()
        );
        let Ok(Command::Fleet(f)) = decode_fleet(with(&m).as_bytes()) else { panic!("{m}") };
        let model = f.model.unwrap();
        assert_eq!(
            (model.sha256.as_str(), model.bytes, model.name.as_str()),
            (sha.as_str(), Some(9), "lite0@abc")
        );
        for (bad, why) in [
            (m.replace("http://x/m.tar", "ftp://x/m.tar"), "model url"),
            (m.replace(&sha.to_uppercase(), "12"), "model.sha256"),
            (m.replace("lite0@abc", "a\\u0007b"), "model.name"),
            (m.replace("\"bytes\"", "\"size\""), "unknown field"),
        ] {
            let e = decode_fleet(with(&bad).as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Apparel & Accessories|Clothing|Shirts & Tops"), "shirts-tops");
        assert_eq!(slug("Apparel & Accessories|Shoes"), "shoes");
        assert_eq!(slug("Apparel & Accessories|Handbags, Wallets & Cases"), "handbags-wallets-cases");
    }
}
