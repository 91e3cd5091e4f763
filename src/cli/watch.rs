//! `lookd watch`: print what a lookd publishes, as it arrives (a kiosk's view, in a terminal).

use std::path::PathBuf;

use lookd::publish::payload::Recommendations;

use super::code;
use super::run::watcher_settings;

#[derive(clap::Args)]
pub struct Args {
    /// The daemon's configuration file (for the broker and topic prefix)
    #[arg(long, default_value = "/etc/lookd/lookd.toml")]
    config: PathBuf,
    /// Exit after this many rankings (other messages are printed, not counted: a first start's
    /// catalog progress would otherwise use the count up before any ranking came)
    #[arg(long)]
    count: Option<usize>,
    /// Print raw payloads instead of a summary
    #[arg(long)]
    raw: bool,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let settings = watcher_settings(&a.config)?;
    let mut seen = 0;
    lookd::publish::watch(&settings, |topic, payload| {
        let text = String::from_utf8_lossy(payload);
        match serde_json::from_slice::<Recommendations>(payload) {
            Ok(r) if !a.raw => {
                let items: Vec<String> = r
                    .items
                    .iter()
                    .take(5)
                    .map(|i| match i.distance {
                        Some(d) => format!("{} ({d:.3})", i.id),
                        None => i.id.clone(),
                    })
                    .collect();
                println!("{topic}: frame {} {} -> {}", r.frame, r.category, items.join(", "));
            }
            _ => println!("{topic} {text}"),
        }
        if topic.contains("/recommendations/") && !payload.is_empty() {
            seen += 1;
        }
        a.count.is_none_or(|n| seen < n)
    });
    Ok(code::OK)
}
