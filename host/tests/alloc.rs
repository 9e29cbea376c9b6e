//! "No per-message heap allocation on the hot path", measured: vigild's loop runs in this process under a
//! counting allocator while 50 simulated guests heartbeat every 100 ms; allocations on the loop's thread are
//! compared with the heartbeats handled in the same window.
#![allow(clippy::unwrap_used, clippy::panic)]
// A counting global allocator is unsafe by nature; it only forwards to the system allocator.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use vigil_host::data::{Daemon, DaemonConfig, BACKOFF_MAX, BACKOFF_MIN};
use vigil_host::events::EventsTarget;

struct Counting;

static LOOP_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IS_LOOP: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if IS_LOOP.try_with(Cell::get).unwrap_or(false) {
            LOOP_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn the_loop_does_not_allocate_per_message() {
    let _serial = heavy();
    let work = TempDir::new("alloc");
    let dir = work.path().join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let _s = sim(&dir, &["--guests", "50", "--interval-ms", "100"]);
    std::thread::sleep(Duration::from_millis(300));
    let events = work.path().join("events.jsonl");
    let cfg = DaemonConfig {
        watch: vec![dir.clone()],
        pattern: None,
        config_file: None,
        events: EventsTarget::File(events.clone()),
        // no status snapshots: they allocate (every 2 s, by design); what is left is the per-message path
        status_file: None,
        rescan: vigil_core::Duration::from_secs(30),
        hostname: "test".into(),
        backoff_min: BACKOFF_MIN,
        backoff_max: BACKOFF_MAX,
        control: vigil_host::control::ControlConfig::default(),
    };
    std::thread::Builder::new()
        .name("vigild-loop".into())
        .spawn(move || {
            IS_LOOP.with(|c| c.set(true));
            let _ = Daemon::new(cfg).and_then(Daemon::run);
        })
        .unwrap();
    // warm up: registrations, buffers reaching their working sizes
    std::thread::sleep(Duration::from_secs(4));
    let text = std::fs::read_to_string(&events).unwrap();
    assert_eq!(text.matches("\"kind\":\"registered\"").count(), 50, "all guests heartbeating");
    let a0 = LOOP_ALLOCS.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(8));
    let allocs = LOOP_ALLOCS.load(Ordering::Relaxed) - a0;
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(!text.contains("heartbeat_lost"), "the guests kept heartbeating");
    // 50 guests x 10 heartbeats/s x 8 s = 4,000 challenges and answers; the rest of the loop's periodic work
    // (systemd STATUS text every 2 s) allocates a handful
    println!("{allocs} allocations on the loop thread during ~4,000 heartbeats");
    assert!(allocs <= 16, "{allocs} allocations during ~4,000 heartbeats: the hot path allocates");
}
