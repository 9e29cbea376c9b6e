//! The bare-metal image under a real emulator: `qemu-system-arm -M lm3s6965evb` with its UART exposed as a UNIX
//! socket, monitored by a core Monitor exactly as vigild monitors a VM. Builds the image first (thumbv7m target).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil_core::*;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Builds the firmware (in its own target dir, so it never waits on the test build's lock); returns the ELF.
fn build_firmware() -> PathBuf {
    let target_dir = workspace().join("target").join("firmware-test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "-p", "vigil-guest", "--bin", "vigil-fw", "--no-default-features", "--features", "firmware"])
        .args(["--target", "thumbv7m-none-eabi", "--profile", "firmware"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building the firmware failed (is the target installed? `rustup target add thumbv7m-none-eabi`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join("thumbv7m-none-eabi/firmware/vigil-fw")
}

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_qemu(elf: &Path, sock: &Path) -> Qemu {
    let child = Command::new("qemu-system-arm")
        .args(["-M", "lm3s6965evb", "-display", "none", "-monitor", "none", "-kernel"])
        .arg(elf)
        .arg("-serial")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("qemu-system-arm not found ({e}): install Debian's qemu-system-arm (scripts/test.sh does)")
        });
    Qemu(child)
}

#[test]
fn firmware_registers_answers_heartbeats_and_a_stopped_emulator_is_declared_lost() {
    let elf = build_firmware();
    let dir = std::env::temp_dir().join(format!("vigil-fw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("cgcs.heartbeat.fw-1.sock");
    let qemu = start_qemu(&elf, &sock);
    // QEMU listens; we are the host and connect, as vigild does
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(Instant::now() < deadline, "QEMU never opened {}", sock.display());
        std::thread::sleep(Duration::from_millis(50));
    };
    conn.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let clock = StdClock::new();
    let mut m = Monitor::new(MonitorConfig::default(), XorShift32::new(11));
    m.connected(clock.now());
    let mut events: Vec<(std::time::Instant, MonitorEvent)> = Vec::new();
    let step =
        |m: &mut Monitor<XorShift32>, conn: &mut UnixStream, events: &mut Vec<(std::time::Instant, MonitorEvent)>| {
            let now = clock.now();
            let mut buf = [0u8; 2048];
            if let Ok(n) = conn.read(&mut buf) {
                let mut input = &buf[..n];
                while !input.is_empty() {
                    let used = m.handle_bytes(now, input);
                    input = &input[used..];
                    while let Some(e) = m.poll_event() {
                        events.push((std::time::Instant::now(), e));
                    }
                }
            }
            while m.poll_timeout().is_some_and(|t| t <= now) {
                m.handle_timeout(now);
                while let Some(e) = m.poll_event() {
                    events.push((std::time::Instant::now(), e));
                }
            }
            let mut wire = [0u8; MAX_WIRE];
            while let Some(n) = m.poll_transmit(now, &mut wire) {
                conn.write_all(&wire[..n]).unwrap();
            }
        };
    // the firmware sends init every 5 s until acknowledged; we may have missed the first
    let deadline = Instant::now() + Duration::from_secs(15);
    while !events.iter().any(|(_, e)| matches!(e, MonitorEvent::Registered(_))) {
        assert!(Instant::now() < deadline, "no registration from the firmware: {events:?}");
        step(&mut m, &mut conn, &mut events);
    }
    let Some((_, MonitorEvent::Registered(r))) = events.iter().find(|(_, e)| matches!(e, MonitorEvent::Registered(_)))
    else {
        panic!()
    };
    assert_eq!((r.init.name.as_str(), r.init.heartbeat_interval_ms), ("vigil-fw", 1000));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        step(&mut m, &mut conn, &mut events);
    }
    let hb = m.stats().heartbeats;
    assert!((4..=7).contains(&hb), "{hb} heartbeats in 5 s at 1 s");
    assert_eq!(m.stats().misses, 0);
    assert!(m.stats().max_rtt < vigil_core::Duration::from_millis(200), "{:?}", m.stats());
    // freeze the emulator (the socket stays open, as with a hung VM): loss within 2 intervals + 1 + slack
    let pid = rustix::process::Pid::from_raw(qemu.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let stopped = std::time::Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    let lost_at = loop {
        if let Some((at, _)) = events.iter().find(|(_, e)| matches!(e, MonitorEvent::HeartbeatLost { .. })) {
            break *at;
        }
        assert!(Instant::now() < deadline, "stopping the emulator was not detected: {events:?}");
        step(&mut m, &mut conn, &mut events);
    };
    let delay = lost_at - stopped;
    assert!(delay <= Duration::from_millis(3300), "loss declared {delay:?} after the emulator stopped");
    // and when it runs again, it registers anew and the host sees recovery
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !events.iter().any(|(_, e)| matches!(e, MonitorEvent::Recovered)) {
        assert!(Instant::now() < deadline, "no recovery after resuming: {events:?}");
        step(&mut m, &mut conn, &mut events);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
