//! The guest agent's local API parser on arbitrary lines: never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_guest::linux::apps::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<Request>(data) {
        let _ = format!("{r:?}");
    }
});
