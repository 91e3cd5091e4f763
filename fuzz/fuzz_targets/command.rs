//! The MQTT command decoders: the first byte picks the topic (or the fleet's decoder), the rest
//! is the payload. Whatever they accept must hold the limits they promise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookd::publish::payload::{decode_command, decode_fleet, scheme, Command, MAX_UNAVAILABLE_IDS};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else { return };
    let topics = ["category/set", "category/get", "", "category/set/x", "catalog/unavailable", "filter/set", "catalog/reload"];
    let decoded = if pick as usize % 8 == 7 {
        decode_fleet(payload)
    } else {
        decode_command(topics[pick as usize % 8], payload, 4096)
    };
    let plain = |s: &str| !s.is_empty() && s.len() <= 200 && !s.chars().any(char::is_control);
    match decoded {
        Ok(Command::SetCategory(name)) => {
            assert!(plain(&name));
            let _ = lookd::publish::payload::slug(&name);
        }
        Ok(Command::Unavailable(ids)) => assert!(ids.len() <= MAX_UNAVAILABLE_IDS && ids.iter().all(|i| plain(i))),
        Ok(Command::SetFilter(f)) => assert!(f.len() <= 16 && f.iter().all(|(k, v)| plain(k) && !v.is_empty())),
        Ok(Command::Fleet(f)) => {
            assert!(scheme(&f.url).is_some() && f.sha256.len() == 64 && f.fingerprint.len() == 64);
        }
        Ok(Command::Reload) | Err(_) => {}
    }
});
