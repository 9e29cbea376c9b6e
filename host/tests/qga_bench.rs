//! Benchmark (not a test: `#[ignore]`, run by `scripts/bench-qga.sh`): agentless guests through one private
//! libvirtd. N TCG domains run only Debian's `qemu-ga`; vigild probes them all (`[qga]`) at falling intervals. Per
//! step: pings answered and missed, false faults (`heartbeat_lost` while every agent runs), and the CPU that vigild
//! and libvirtd spent per ping (from /proc, user + system), side by side. Then the detection time at a 1 s
//! interval (one agent stopped), and the anchors it is compared with. Prints a table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::libvirt::{vm_files_with, Libvirtd};
use common::vm::*;
use common::*;

const TAIL: &str = "for p in /sys/class/virtio-ports/*; do [ \"$(cat $p/name)\" = org.qemu.guest_agent.0 ] && \
                    QGA=/dev/$(basename $p); done\nmkdir -p /run/qga\n\
                    /usr/sbin/qemu-ga -m virtio-serial -p $QGA -t /run/qga &\necho vigil-vm: qemu-ga started\n\
                    while true; do sh </dev/ttyS1 >/dev/ttyS1 2>&1; done\n";

/// CPU time (user + system) of a process, in milliseconds.
fn cpu_ms(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // fields 14 and 15 (utime, stime) are the 12th and 13th after the ")"
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks * 1000 / 100 // USER_HZ is 100 on Linux
}

fn probes(d: &Vigild) -> (u64, u64) {
    let (_, m) = vigil_host_metrics(d);
    let get = |r: &str| {
        m.lines()
            .find(|l| l.starts_with(&format!("vigil_agent_probes_total{{result=\"{r}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    (get("answered"), get("missed"))
}

fn vigil_host_metrics(d: &Vigild) -> (u16, String) {
    match vigil_host::control::client::request(&d.admin, "GET", "/metrics", None, Duration::from_secs(10)) {
        Ok(r) => r,
        Err(e) => panic!("metrics: {e}"),
    }
}

fn libvirtd_pid(dir: &std::path::Path) -> i32 {
    std::fs::read_to_string(dir.join("libvirtd.pid")).unwrap().trim().parse().unwrap()
}

#[test]
#[ignore = "a benchmark: scripts/bench-qga.sh"]
fn qga_ping_rate_and_cost_through_one_libvirtd() {
    let _serial = heavy();
    let n: usize = std::env::var("VIGIL_QGA_BENCH_VMS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let secs: u64 = std::env::var("VIGIL_QGA_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let work = TempDir::new("qgab");
    let dir = work.path().join("qemu");
    let (k, initrd) = vm_files_with(work.path(), &dir, TAIL, &qemu_ga_files());
    let lv_dir = work.path().join("libvirt");
    let lv = Libvirtd::start(&lv_dir);
    let mut ttys = Vec::new();
    for i in 0..n {
        let name = format!("vigil-qb-{i}");
        let uuid = format!("0c0ffee0-ab{i:02x}-4222-8333-444455556666");
        let console = work.path().join(format!("{name}.log"));
        let tty = dir.join(format!("tty-{i}.sock"));
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>160</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
             <cmdline>console=ttyS0 quiet</cmdline></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
             <serial type='file'><source path='{}'/><target port='0'/></serial>\
             <serial type='unix'><source mode='bind' path='{}'/><target port='1'/></serial>\
             <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\
             <memballoon model='none'/></devices></domain>",
            k.display(),
            initrd.display(),
            console.display(),
            tty.display()
        );
        let path = work.path().join(format!("{name}.xml"));
        std::fs::write(&path, xml).unwrap();
        lv.must(&["create", path.to_str().unwrap()]);
        ttys.push((tty, console, uuid));
    }
    for (_, console, _) in &ttys {
        wait_console(console, "qemu-ga started", 300);
    }
    std::thread::sleep(Duration::from_secs(3));
    let lvpid = libvirtd_pid(&lv_dir);
    let mut rows = Vec::new();
    for interval_ms in [1000u64, 250, 100] {
        let config = work.path().join(format!("vigild-{interval_ms}.toml"));
        std::fs::write(&config, format!("[qga]\ninterval_ms = {interval_ms}\nrescan_secs = 2\n")).unwrap();
        let run = work.path().join(format!("run-{interval_ms}"));
        std::fs::create_dir_all(&run).unwrap();
        let d = Vigild::start(&dir, &run, &["--config", config.to_str().unwrap(), "--libvirt", &lv.uri]);
        d.wait_ready();
        d.wait_until(30, "every domain watched", |ev| count(ev, "watching") == n);
        std::thread::sleep(Duration::from_secs(3)); // first answers: misses count from then on
        let (a0, m0) = probes(&d);
        let (v0, l0) = (cpu_ms(d.proc.0.id() as i32), cpu_ms(lvpid));
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let (a1, m1) = probes(&d);
        let (v1, l1) = (cpu_ms(d.proc.0.id() as i32), cpu_ms(lvpid));
        let elapsed = t0.elapsed().as_secs_f64();
        let pings = (a1 - a0 + m1 - m0).max(1);
        rows.push(format!(
            "| {interval_ms} ms | {:.0} | {:.1} | {} | {} | {:.0} | {:.0} |",
            (n as f64) * 1000.0 / interval_ms as f64,
            pings as f64 / elapsed,
            m1 - m0,
            count(&d.events(), "heartbeat_lost"),
            (v1 - v0) as f64 * 1000.0 / pings as f64,
            (l1 - l0) as f64 * 1000.0 / pings as f64,
        ));
        drop(d);
    }
    // detection at a 1 s interval: one agent stopped
    let config = work.path().join("vigild-detect.toml");
    std::fs::write(&config, "[qga]\ninterval_ms = 1000\nrescan_secs = 2\n").unwrap();
    let run = work.path().join("run-detect");
    std::fs::create_dir_all(&run).unwrap();
    let d = Vigild::start(&dir, &run, &["--config", config.to_str().unwrap(), "--libvirt", &lv.uri]);
    d.wait_ready();
    d.wait_until(30, "every domain watched", |ev| count(ev, "watching") == n);
    std::thread::sleep(Duration::from_secs(4));
    let (tty, _, uuid) = &ttys[0];
    let mut shell = UnixStream::connect(tty).unwrap();
    shell.write_all(b"\nkill -STOP $(pidof qemu-ga)\n").unwrap();
    let t = Instant::now();
    d.wait_until(30, "detection", |ev| !by_guest(ev, uuid, "heartbeat_lost").is_empty());
    let detect = t.elapsed();
    println!("\nqga through one libvirtd: {n} TCG domains running only qemu-ga, {secs} s per step");
    println!("| interval | pings/s asked | pings/s done | missed | false faults | vigild µs CPU/ping | libvirtd µs CPU/ping |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!(
        "\ndetection at 1 s (timeout 0.5 s): qemu-ga stopped -> heartbeat_lost in {} ms \
         (masakari-monitors: >= 40 s; KubeVirt: 30 s)",
        detect.as_millis()
    );
}
