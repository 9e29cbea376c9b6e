//! Recovery through libvirt (issue #23), with the real libvirt: a private libvirtd, three TCG domains running the
//! static agent in a busybox initramfs, and vigild with `policy = "libvirt"`.
//!
//! - **C**, a guest that freezes: 8 s after its agent starts, its kernel crashes (`echo c > /proc/sysrq-trigger`;
//!   the domain has no panic device, so the hypervisor says nothing and QEMU keeps running a dead guest). vigild
//!   declares the heartbeat lost and resets it through libvirt, having saved the console screenshot (a PNG that
//!   decodes) and the serial log's tail (which shows the crash) first; the admin API lists that evidence. C freezes
//!   again after every reset: it is reset three times, then `action_suppressed` (budget 3 per hour). vigild is
//!   restarted right after the third reset: the new process reads the budget back from the state directory and does
//!   not reset a fourth time.
//! - **D**, a guest whose QEMU process is stopped (SIGSTOP): the reset gets no answer (QEMU does not read its
//!   monitor) and times out, so vigild power-cycles the persistent domain (destroy kills the process, start boots it
//!   again); the guest registers anew. The other guests' verdicts and actions go on meanwhile.
//! - **B1** and **B2**: 6 s after boot the agent is stopped (SIGSTOP) while the VM keeps writing to its virtio disk.
//!   With the second opinion on (B1) the disk counters move: `action_result` `held` with `os_activity: true`, and no
//!   reset. Without it (B2), the heartbeat alone decides: reset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::libvirt::{vm_files, Libvirtd};
use common::vm::*;
use common::*;
use serde_json::Value;

const UUID_C: &str = "0c0ffee0-c0c0-4222-8333-444455556666";
const UUID_B1: &str = "0c0ffee0-b1b1-4222-8333-444455556666";
const UUID_B2: &str = "0c0ffee0-b2b2-4222-8333-444455556666";
const UUID_D: &str = "0c0ffee0-d0d0-4222-8333-444455556666";
const NAME_D: &str = "vigil-rd";

/// Undefines the persistent domain D however the test ends (the private libvirtd keeps definitions in the
/// system's configuration directory).
struct Undefine<'a>(&'a Libvirtd);

impl Drop for Undefine<'_> {
    fn drop(&mut self) {
        let _ = self.0.virsh(&["destroy", NAME_D]);
        let _ = self.0.virsh(&["undefine", NAME_D]);
    }
}

/// The pid of the QEMU process running domain `name`.
fn qemu_pid(name: &str) -> i32 {
    let needle = format!("guest={name},");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(&needle) {
            return pid;
        }
    }
    panic!("no QEMU process for {name}");
}

/// The end of /init: the agent in the background, then what the kernel command line's `vigil.mode` asks for.
const TAIL: &str = "/sbin/vigil-guest --name vm-test --interval-ms 500 --api-socket /run/vigil/guest.sock \
                    --no-reference-api &\nAGENT=$!\ncase \"$(cat /proc/cmdline)\" in\n\
                    *vigil.mode=crash*) sleep 8; echo vigil-vm: crashing; echo c > /proc/sysrq-trigger ;;\n\
                    *vigil.mode=busy*) sleep 6; echo vigil-vm: agent stopped, disk busy; kill -STOP $AGENT;\n\
                    while true; do dd if=/dev/zero of=/dev/vda bs=64k count=16 2>/dev/null; sync; sleep 1; done ;;\n\
                    esac\nwhile true; do sleep 3600; done\n";

#[allow(clippy::too_many_arguments)]
fn domain_xml(name: &str, uuid: &str, k: &Path, initrd: &Path, mode: &str, console: &Path, sock: &Path) -> String {
    let disk = console.with_extension("img");
    std::fs::write(&disk, vec![0u8; 8 << 20]).unwrap();
    format!(
        "<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>160</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
         <cmdline>console=ttyS0 quiet vigil.mode={mode}</cmdline></os>\
         <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
         <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/>\
         <target dev='vda' bus='virtio'/></disk>\
         <serial type='file'><source path='{}'/><target port='0'/></serial>\
         <channel type='unix'><source mode='bind' path='{}'/><target type='virtio' name='cgcs.heartbeat'/></channel>\
         <graphics type='vnc' autoport='yes' listen='127.0.0.1'/><video><model type='vga'/></video>\
         <memballoon model='none'/></devices></domain>",
        k.display(),
        initrd.display(),
        disk.display(),
        console.display(),
        sock.display()
    )
}

fn results<'a>(ev: &'a [Value], guest: &str) -> Vec<&'a Value> {
    by_guest(ev, guest, "action_result")
}

#[test]
fn hung_guests_are_reset_with_evidence_within_budget_and_busy_ones_held_by_the_second_opinion() {
    let _serial = heavy();
    need("qemu-system-x86_64", which("qemu-system-x86_64"), "qemu-system-x86");
    let work = TempDir::new("recov");
    let dir = work.path().join("qemu");
    let other = work.path().join("qemu-b2"); // B2's socket: named in the config only
    let (k, initrd) = vm_files(work.path(), &dir, TAIL);
    std::fs::create_dir_all(&other).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let lv = Libvirtd::start(&work.path().join("libvirt"));
    let state = work.path().join("state");
    let sock_b2 = other.join(format!("cgcs.heartbeat.{UUID_B2}.sock"));
    let config = work.path().join("vigild.toml");
    std::fs::write(
        &config,
        format!(
            "[defaults]\npolicy = \"libvirt\"\nmin_uptime_secs = 5\nsecond_opinion_secs = 4\n\
             [[guest]]\nid = \"{UUID_B2}\"\nsocket = \"{}\"\nsecond_opinion_secs = 0\n",
            sock_b2.display()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap(), "--libvirt", &lv.uri, "--state-dir", state.to_str().unwrap()];
    let run1 = work.path().join("run1");
    std::fs::create_dir_all(&run1).unwrap();
    let d = Vigild::start(&dir, &run1, &args);
    d.wait_ready();

    let mut consoles = Vec::new();
    for (name, uuid, mode, sock_dir) in [
        ("vigil-rc", UUID_C, "crash", &dir),
        ("vigil-rb1", UUID_B1, "busy", &dir),
        ("vigil-rb2", UUID_B2, "busy", &other),
    ] {
        let console = work.path().join(format!("{name}.log"));
        let sock = sock_dir.join(format!("cgcs.heartbeat.{uuid}.sock"));
        let xml = work.path().join(format!("{name}.xml"));
        std::fs::write(&xml, domain_xml(name, uuid, &k, &initrd, mode, &console, &sock)).unwrap();
        lv.must(&["create", xml.to_str().unwrap()]);
        consoles.push(console);
    }
    // D: persistent (defined), so that it can be started again after a power cycle
    let console_d = work.path().join(format!("{NAME_D}.log"));
    let xml_d = work.path().join("d.xml");
    let sock_d = dir.join(format!("cgcs.heartbeat.{UUID_D}.sock"));
    std::fs::write(&xml_d, domain_xml(NAME_D, UUID_D, &k, &initrd, "plain", &console_d, &sock_d)).unwrap();
    lv.must(&["define", xml_d.to_str().unwrap()]);
    let _undefine = Undefine(&lv);
    lv.must(&["start", NAME_D]);
    consoles.push(console_d);
    let dump =
        || consoles.iter().map(|c| std::fs::read_to_string(c).unwrap_or_default()).collect::<Vec<_>>().join("\n----\n");

    // C: lost, evidence, reset through libvirt
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.wait_until(120, "C's first reset", |ev| !results(ev, UUID_C).is_empty());
    }));
    if first.is_err() {
        panic!("consoles:\n{}", dump());
    }
    let ev = d.events();
    let r = results(&ev, UUID_C)[0];
    assert_eq!((r["operation"].as_str(), r["result"].as_str()), (Some("reset"), Some("ok")), "{r}");
    let lost = by_guest(&ev, UUID_C, "heartbeat_lost")[0];
    println!(
        "recovery: heartbeat_lost -> reset done through libvirt in {} ms (evidence included)",
        event_ms(&r["time"]).saturating_sub(event_ms(&lost["time"]))
    );
    let files: Vec<&str> = r["evidence"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    let png = files.iter().find(|f| f.ends_with("screen.png")).expect("a screenshot");
    let bytes = std::fs::read(png).unwrap();
    let mut reader = png::Decoder::new(&bytes[..]).read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("the PNG decodes");
    assert!(info.width >= 320 && info.height >= 200, "{}x{}", info.width, info.height);
    let console = files.iter().find(|f| f.ends_with("console.txt")).expect("the console's tail");
    let text = std::fs::read_to_string(console).unwrap();
    assert!(text.contains("vigil-vm: crashing"), "{text}");
    let total: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    println!("recovery: evidence for one reset: {total} bytes ({} files: {files:?})", files.len());
    let (status, listing) = admin(&d, "GET", &format!("/v1/guests/{UUID_C}/evidence"), None);
    assert_eq!(status, 200, "{listing}");
    assert!(listing["evidence"][0]["files"].as_array().unwrap().iter().any(|f| f["name"] == "screen.png"), "{listing}");

    // D: its QEMU stopped once it heartbeats; the reset times out, the domain is power-cycled
    d.wait_until(120, "D registered", |ev| !by_guest(ev, UUID_D, "registered").is_empty());
    let pid = rustix::process::Pid::from_raw(qemu_pid(NAME_D)).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    d.wait_until(150, "D power-cycled and registered again", |ev| {
        !results(ev, UUID_D).is_empty() && by_guest(ev, UUID_D, "registered").len() >= 2
    });
    let ev = d.events();
    let rd = results(&ev, UUID_D)[0];
    assert_eq!((rd["operation"].as_str(), rd["result"].as_str()), (Some("reset"), Some("ok")), "{rd}");
    assert!(rd["reason"].as_str().unwrap().contains("power-cycled"), "{rd}");
    let lost_d = by_guest(&ev, UUID_D, "heartbeat_lost")[0];
    println!(
        "recovery: QEMU stopped: heartbeat_lost -> power-cycled in {} ms ({})",
        event_ms(&rd["time"]).saturating_sub(event_ms(&lost_d["time"])),
        rd["reason"]
    );
    let notes = rd["evidence"].as_array().unwrap().iter().find(|f| f.as_str().unwrap().ends_with("notes.txt"));
    let notes = std::fs::read_to_string(notes.expect("notes on the missing screenshot").as_str().unwrap()).unwrap();
    assert!(notes.contains("no screenshot"), "{notes}");
    assert_ne!(qemu_pid(NAME_D), pid.as_raw_nonzero().get(), "a new QEMU process");

    // B1 held by the second opinion, B2 reset on the heartbeat alone
    d.wait_until(120, "B1 and B2 acted on", |ev| !results(ev, UUID_B1).is_empty() && !results(ev, UUID_B2).is_empty());
    let ev = d.events();
    let b1 = results(&ev, UUID_B1)[0];
    assert_eq!(b1["result"], "held", "{b1}");
    assert_eq!(b1["os_activity"], true);
    assert!(b1["activity"]["block_bytes"].as_u64().unwrap() > 0, "{b1}");
    assert!(b1["evidence"].is_null(), "no evidence for an action not taken");
    let b2 = results(&ev, UUID_B2)[0];
    assert_eq!((b2["operation"].as_str(), b2["result"].as_str()), (Some("reset"), Some("ok")), "{b2}");
    assert!(b2["os_activity"].is_null(), "no second opinion asked");
    let lost_b2 = by_guest(&ev, UUID_B2, "heartbeat_lost")[0];
    println!(
        "recovery: heartbeat_lost -> reset through libvirt without a second opinion (B2) in {} ms",
        event_ms(&b2["time"]).saturating_sub(event_ms(&lost_b2["time"]))
    );

    // C freezes after each reset: three resets, then restart vigild before its next loss
    d.wait_until(150, "C reset three times", |ev| {
        results(ev, UUID_C).iter().filter(|r| r["result"] == "ok").count() >= 3
    });
    drop(d);
    let ledger: Value = serde_json::from_slice(&std::fs::read(state.join("action-ledger.json")).unwrap()).unwrap();
    assert_eq!(ledger["guests"][UUID_C]["actions_unix_ms"].as_array().unwrap().len(), 3, "{ledger}");
    let run2 = work.path().join("run2");
    std::fs::create_dir_all(&run2).unwrap();
    let d = Vigild::start(&dir, &run2, &args);
    d.wait_ready();
    d.wait_until(90, "C lost again and its action suppressed", |ev| {
        !by_guest(ev, UUID_C, "action_suppressed").is_empty()
    });
    let ev = d.events();
    let s = by_guest(&ev, UUID_C, "action_suppressed")[0];
    assert_eq!((s["why"].as_str(), s["budget"].as_str()), (Some("budget"), Some("3 per 3600 s")), "{s}");
    assert!(s["allowed_in_secs"].as_u64().unwrap() > 3000, "{s}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(results(&d.events(), UUID_C).is_empty(), "no fourth reset after the restart");
    let t = Instant::now();
    drop(d);
    drop(_undefine);
    drop(lv);
    assert!(t.elapsed() < Duration::from_secs(60));
}
