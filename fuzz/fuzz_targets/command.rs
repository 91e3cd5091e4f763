//! The MQTT command decoder: the first byte picks the topic, the rest is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else { return };
    let suffix = ["category/set", "category/get", "", "category/set/x"][pick as usize % 4];
    if let Ok(lookd::publish::Command::SetCategory(name)) =
        lookd::publish::payload::decode_command(suffix, payload, 4096)
    {
        assert!(!name.is_empty() && name.len() <= 200 && !name.chars().any(char::is_control));
        let _ = lookd::publish::payload::slug(&name);
    }
});
