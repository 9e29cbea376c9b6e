//! Packets from libvirtd (vigild's own libvirt client): the length check, the header and every reply decoder never
//! panic on any bytes, and what they return stays inside the bounds they were given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_core::libvirt::*;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        if let Ok(n) = body_len([data[0], data[1], data[2], data[3]]) {
            assert!((HEADER_BYTES..=MESSAGE_MAX).contains(&n));
        }
    }
    if let Ok((h, body)) = decode_header(data) {
        assert_eq!(body.len() + HEADER_BYTES, data.len());
        let _ = h.serial;
    }
    if let Ok(e) = decode_error(data) {
        assert!(e.message.map_or(0, str::len) <= MAX_MESSAGE);
    }
    if let Ok(d) = decode_domain(data) {
        assert!(d.name.len() <= MAX_NAME);
    }
    let _ = decode_info(data);
    let _ = decode_block_stats(data);
    let _ = decode_interface_stats(data);
    let _ = decode_auth_list(data);
    let _ = decode_time(data);
    let mut n = 0u32;
    if let Ok(count) = decode_domain_list(data, |d| {
        assert!(d.name.len() <= MAX_NAME);
        n += 1;
    }) {
        assert_eq!(count, n);
    }
    if let Ok(Some(s)) = decode_opt_string(data, 256) {
        assert!(s.len() <= 256);
    }
    if let Ok(s) = decode_string(data, 1024) {
        assert!(s.len() <= 1024);
    }
});
