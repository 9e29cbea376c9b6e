//! The heartbeat port: the virtio-serial character device (opened non-blocking: with no host connected a
//! blocking write would hang the agent forever) or, for tests and UARTs exposed by QEMU, a UNIX socket.
//! Adapts either to `embedded_io` for the [`Driver`](crate::Driver).

use std::prelude::rust_2021::*;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::event::{poll, PollFd, PollFlags};

/// The name QEMU/libvirt give the heartbeat channel.
pub const PORT_NAME: &str = "cgcs.heartbeat";
/// Where udev links it.
pub const DEFAULT_PORT: &str = "/dev/virtio-ports/cgcs.heartbeat";

/// Finds the port: `explicit` if given; else the udev link; else the `/dev/vportNpM` whose
/// `/sys/class/virtio-ports/*/name` is `cgcs.heartbeat` (no udev in minimal images).
pub fn find_port(explicit: Option<&Path>, sys_root: &Path, dev_root: &Path) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let link = dev_root.join("virtio-ports").join(PORT_NAME);
    if link.exists() {
        return Some(link);
    }
    let class = sys_root.join("class/virtio-ports");
    let mut entries: Vec<_> = std::fs::read_dir(&class).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    entries.into_iter().find_map(|e| {
        let name = std::fs::read_to_string(e.path().join("name")).ok()?;
        (name.trim() == PORT_NAME).then(|| dev_root.join(e.file_name()))
    })
}

/// An open port.
pub enum Port {
    /// Nothing open (never ready).
    Closed,
    /// The virtio-serial device.
    Device(File),
    /// A UNIX socket (connected).
    Socket(UnixStream),
}

impl Port {
    /// Opens `path`: a socket is connected to, anything else opened read-write, non-blocking.
    pub fn open(path: &Path) -> io::Result<Port> {
        let meta = std::fs::metadata(path)?;
        if meta.file_type().is_socket() {
            let s = UnixStream::connect(path)?;
            s.set_nonblocking(true)?;
            return Ok(Port::Socket(s));
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32 | rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(path)?;
        Ok(Port::Device(f))
    }

    /// The descriptor, for the event loop.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Port::Closed => -1,
            Port::Device(f) => f.as_raw_fd(),
            Port::Socket(s) => s.as_raw_fd(),
        }
    }

    fn ready(&self, flags: PollFlags) -> io::Result<bool> {
        self.ready_within(flags, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 }))
    }

    /// Blocks until the port is ready for `flags` (embedded-io's `Read`/`Write` block; the driver asks
    /// `read_ready`/`write_ready` first, so this only waits after a spurious readiness).
    fn wait(&self, flags: PollFlags) -> io::Result<()> {
        while !self.ready_within(flags, None)? {}
        Ok(())
    }

    fn ready_within(&self, flags: PollFlags, timeout: Option<&rustix::event::Timespec>) -> io::Result<bool> {
        let fd = match self {
            Port::Closed => return Ok(false),
            Port::Device(f) => f.as_fd(),
            Port::Socket(s) => s.as_fd(),
        };
        let mut fds = [PollFd::new(&fd, flags)];
        match poll(&mut fds, timeout) {
            Err(rustix::io::Errno::INTR) => Ok(false),
            Ok(n) => {
                let rev = fds[0].revents();
                if rev.intersects(PollFlags::ERR | PollFlags::NVAL) {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "port error"));
                }
                // HUP with nothing to read: the host side is gone; let the read report it
                Ok(n > 0 && rev.intersects(flags | PollFlags::HUP))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Errors of the port as `embedded_io` sees them.
#[derive(Debug)]
pub struct PortError(pub io::Error);

impl embedded_io::Error for PortError {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::Other
    }
}

impl core::fmt::Display for PortError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for PortError {}

impl embedded_io::ErrorType for Port {
    type Error = PortError;
}

fn not_open() -> PortError {
    PortError(io::Error::new(io::ErrorKind::NotConnected, "port not open"))
}

/// As `embedded_io::Read` requires: blocks until at least one byte is there (never `Ok(0)` for "nothing yet",
/// which the trait defines as end of stream); the host closing its end is an error, so the agent reopens.
impl embedded_io::Read for Port {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, PortError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let r = match self {
                Port::Closed => return Err(not_open()),
                Port::Device(f) => f.read(buf),
                Port::Socket(s) => s.read(buf),
            };
            return match r {
                // a ready port that reads 0 bytes: the host closed its end
                Ok(0) => Err(PortError(io::Error::new(io::ErrorKind::UnexpectedEof, "host closed the port"))),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(PollFlags::IN).map_err(PortError)?;
                    continue;
                }
                Err(e) => Err(PortError(e)),
            };
        }
    }
}

impl embedded_io::ReadReady for Port {
    fn read_ready(&mut self) -> Result<bool, PortError> {
        self.ready(PollFlags::IN).map_err(PortError)
    }
}

/// As `embedded_io::Write` requires: blocks until at least one byte is taken (never `Ok(0)` for a non-empty
/// buffer).
impl embedded_io::Write for Port {
    fn write(&mut self, buf: &[u8]) -> Result<usize, PortError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let r = match self {
                Port::Closed => return Err(not_open()),
                Port::Device(f) => f.write(buf),
                Port::Socket(s) => s.write(buf),
            };
            return match r {
                Ok(0) => Err(PortError(io::Error::new(io::ErrorKind::WriteZero, "port took nothing"))),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(PollFlags::OUT).map_err(PortError)?;
                    continue;
                }
                Err(e) => Err(PortError(e)),
            };
        }
    }
    fn flush(&mut self) -> Result<(), PortError> {
        Ok(())
    }
}

impl embedded_io::WriteReady for Port {
    fn write_ready(&mut self) -> Result<bool, PortError> {
        self.ready(PollFlags::OUT).map_err(PortError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_port_by_sysfs_name_without_udev() {
        let root = std::env::temp_dir().join(format!("vigil-port-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let sys = root.join("sys");
        let dev = root.join("dev");
        for (vport, name) in [("vport0p1", "org.qemu.guest_agent.0"), ("vport0p2", "cgcs.heartbeat")] {
            std::fs::create_dir_all(sys.join("class/virtio-ports").join(vport)).unwrap();
            std::fs::write(sys.join("class/virtio-ports").join(vport).join("name"), format!("{name}\n")).unwrap();
        }
        std::fs::create_dir_all(&dev).unwrap();
        assert_eq!(find_port(None, &sys, &dev), Some(dev.join("vport0p2")));
        std::fs::create_dir_all(dev.join("virtio-ports")).unwrap();
        std::fs::write(dev.join("virtio-ports/cgcs.heartbeat"), "").unwrap();
        assert_eq!(find_port(None, &sys, &dev), Some(dev.join("virtio-ports/cgcs.heartbeat")), "udev link first");
        assert_eq!(find_port(Some(Path::new("/x")), &sys, &dev), Some(PathBuf::from("/x")));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn reads_and_writes_follow_embedded_io_never_ok_0_for_not_yet() {
        use embedded_io::{Read as _, ReadReady as _, Write as _};
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut port = Port::Socket(ours);
        assert!(!port.read_ready().unwrap());
        // nothing there yet: read waits for the byte instead of answering Ok(0) ("end of stream")
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            theirs.write_all(b"hi").unwrap();
            theirs
        });
        let mut buf = [0u8; 8];
        let n = port.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(port.write(b"x").unwrap(), 1);
        // the peer closes: end of stream is an error the agent acts on (it reopens the port)
        drop(writer.join().unwrap());
        assert!(port.read(&mut buf).is_err());
        // a closed port is an error, not "nothing to read"
        assert!(Port::Closed.read(&mut buf).is_err());
        assert!(Port::Closed.write(b"x").is_err());
    }
}
