//! QMP lines from a hypervisor socket: the parser never panics on any bytes, and a line it calls an event has a
//! bounded name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::qmp::{parse, QmpLine};

fuzz_target!(|data: &[u8]| {
    if let Ok(QmpLine::Event(name)) = parse(data) {
        assert!(name.len() <= 32);
    }
});
