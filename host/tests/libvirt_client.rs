//! vigild's own libvirt client (`control::libvirt`) against a real private libvirtd and a real TCG domain: lookups
//! by UUID and name, info, XML, block statistics, a screenshot (a real VGA frame), reset, destroy and start; libvirt's
//! own errors arrive typed (unknown domain: `VIR_ERR_NO_DOMAIN`, 42); and against a socket that accepts and never
//! answers, every call ends at its timeout while another call on a healthy connection is not delayed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::libvirt::{vm_files, Libvirtd};
use common::*;
use vigil_host::control::libvirt::{Error, Libvirt};

const UUID: &str = "0c0ffee0-5555-4222-8333-444455556666";
const NAME: &str = "vigil-client-a";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn the_client_speaks_to_a_real_libvirtd() {
    let _serial = heavy();
    let tmp = TempDir::new("lvclient");
    let lv = Libvirtd::start(&tmp.path().join("lv"));
    let (kernel, initrd) = vm_files(tmp.path(), &tmp.path().join("sock"), "");
    let console = tmp.path().join("console.log");
    let xml = format!(
        "<domain type='qemu'><name>{NAME}</name><uuid>{UUID}</uuid><memory unit='MiB'>160</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
         <cmdline>console=ttyS0 quiet</cmdline></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
         <serial type='file'><source path='{}'/><target port='0'/></serial>\
         <graphics type='vnc' autoport='yes' listen='127.0.0.1'/><video><model type='vga'/></video>\
         <memballoon model='none'/></devices></domain>",
        kernel.display(),
        initrd.display(),
        console.display()
    );
    let xml_path = tmp.path().join("a.xml");
    std::fs::write(&xml_path, xml).unwrap();
    lv.must(&["define", xml_path.to_str().unwrap()]);
    lv.must(&["start", NAME]);

    let rt = runtime();
    let client = Libvirt::new(&lv.uri).unwrap();
    rt.block_on(async {
        let d = client.lookup(UUID).await.unwrap();
        assert_eq!(d.name, NAME);
        assert!(d.id > 0, "a running domain has an id");
        assert_eq!(client.lookup(NAME).await.unwrap().uuid, d.uuid);
        let info = client.info(&d, None).await.unwrap();
        assert_eq!(info.state, 1, "running");
        assert_eq!(info.vcpus, 1);
        assert_eq!(info.max_mem_kib, 160 * 1024);
        let xml = client.xml(&d, None).await.unwrap();
        assert!(xml.contains(UUID) && xml.contains("<graphics type='vnc'"), "{xml}");
        match client.block_stats(&d, "vdz", None).await {
            Err(Error::Remote { message, .. }) => assert!(message.contains("vdz"), "{message}"),
            other => panic!("block stats of a disk the domain lacks: {other:?}"),
        }
        // let the VGA console show something, then take its picture
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (mime, image) = client.screenshot(&d, 16 << 20, Duration::from_secs(30)).await.unwrap();
        assert!(mime.starts_with("image/"), "{mime}");
        assert!(image.len() > 1000, "{} bytes of {mime}", image.len());
        if mime == "image/x-portable-pixmap" {
            assert!(image.starts_with(b"P6"), "a PPM");
        }
        // the connection is still good after a stream
        let cpu_before = client.info(&d, None).await.unwrap().cpu_time_ns;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(client.info(&d, None).await.unwrap().cpu_time_ns > cpu_before, "the vCPU time moves");
        // actions get a wide bound: libvirt's destroy waits up to 10 s for QEMU to take SIGTERM before SIGKILL, and
        // a loaded machine is slow to reset a TCG guest
        let wide = Some(Duration::from_secs(60));
        client.reset(&d, wide).await.unwrap();
        client.destroy(&d, wide).await.unwrap();
        assert_eq!(client.info(&d, None).await.unwrap().state, 5, "shut off");
        match client.destroy(&d, wide).await {
            Err(Error::Remote { code, .. }) => assert_eq!(code, vigil_core::libvirt::ERR_OPERATION_INVALID),
            other => panic!("destroying a stopped domain: {other:?}"),
        }
        client.start(&d, wide).await.unwrap();
        assert_eq!(client.info(&d, None).await.unwrap().state, 1);
        match client.lookup("0c0ffee0-0000-4222-8333-444455556666").await {
            Err(Error::Remote { code, .. }) => assert_eq!(code, vigil_core::libvirt::ERR_NO_DOMAIN),
            other => panic!("unknown domain: {other:?}"),
        }
    });
    drop(lv);
    // libvirtd gone: a typed connection error, not a hang
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let e = client.lookup(UUID).await.unwrap_err();
        assert!(matches!(e, Error::Connect(_) | Error::Timeout { .. }), "{e:?}");
    });
}

#[test]
fn a_silent_server_times_each_call_out() {
    let tmp = TempDir::new("lvsilent");
    let path = tmp.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // accepts and reads, never answers (a libvirtd whose worker threads are all stuck)
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let rt = runtime();
    let client = Libvirt::new(&format!("qemu+unix:///system?socket={}", path.display()))
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    rt.block_on(async {
        let t0 = Instant::now();
        let (a, b) = tokio::join!(client.lookup(UUID), client.lookup(NAME));
        // both calls end by their own timeout: well under the 10 s that a serialized wait would approach
        assert!(matches!(a, Err(Error::Timeout { .. })), "{a:?}");
        assert!(matches!(b, Err(Error::Timeout { .. })), "{b:?}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    });
}
