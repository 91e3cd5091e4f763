//! The configuration parser and checker: any text gives a Config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = lookd::config::Config::parse(text, std::path::Path::new("fuzz.toml")) {
            // What the daemon derives from a valid config must not panic either.
            let _ = lookd::pipeline::Options::from_config(&config, Some(1));
        }
    }
});
