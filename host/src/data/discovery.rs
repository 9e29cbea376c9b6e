//! Discovery: which guest sockets exist. inotify on the watched directories says what appeared or went away; a
//! periodic rescan is the safety net (a lost watch, an inotify queue overflow, a directory created later).
//!
//! It owns the inotify descriptor, the watches, the directories and the file-name pattern, and answers with
//! added and removed socket paths. It never touches a guest's socket.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use tracing::warn;

use crate::glob::Pattern;

/// What changed in a watched directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A socket matching the pattern appeared: its guest id and path.
    Added(String, PathBuf),
    /// A path went away.
    Removed(PathBuf),
}

/// The watched directories and pattern, and the inotify watches on them.
pub struct Discovery {
    dirs: Vec<PathBuf>,
    pattern: Pattern,
    inotify: Option<OwnedFd>,
    watches: HashMap<i32, PathBuf>,
}

impl Discovery {
    /// Discovery of `pattern` in `dirs`; call [`register`](Self::register) to get inotify events.
    pub fn new(dirs: Vec<PathBuf>, pattern: Pattern) -> Self {
        Discovery { dirs, pattern, inotify: None, watches: HashMap::new() }
    }

    /// The pattern in force.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// The directories watched.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Sets up inotify and registers it with the loop under `token`; without it, rescans do the work.
    pub fn register(&mut self, registry: &Registry, token: Token) {
        use rustix::fs::inotify;
        match inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC) {
            Ok(fd) => {
                let raw = fd.as_raw_fd();
                if let Err(e) = registry.register(&mut SourceFd(&raw), token, Interest::READABLE) {
                    warn!(error = %e, "inotify registration failed; relying on rescans");
                    return;
                }
                self.inotify = Some(fd);
            }
            Err(e) => warn!(error = %e, "inotify unavailable; relying on rescans"),
        }
        self.add_watches();
    }

    /// New directories and pattern (a reloaded configuration): watches follow; the caller rescans.
    pub fn set(&mut self, dirs: Vec<PathBuf>, pattern: Pattern) {
        use rustix::fs::inotify::remove_watch;
        if let Some(fd) = &self.inotify {
            let gone: Vec<i32> = self.watches.iter().filter(|(_, d)| !dirs.contains(d)).map(|(&wd, _)| wd).collect();
            for wd in gone {
                let _ = remove_watch(fd, wd);
                self.watches.remove(&wd);
            }
        }
        self.dirs = dirs;
        self.pattern = pattern;
        self.add_watches();
    }

    fn add_watches(&mut self) {
        use rustix::fs::inotify::{add_watch, WatchFlags};
        let Some(fd) = &self.inotify else { return };
        for dir in &self.dirs {
            if self.watches.values().any(|d| d == dir) {
                continue;
            }
            let flags = WatchFlags::CREATE
                | WatchFlags::DELETE
                | WatchFlags::MOVED_TO
                | WatchFlags::MOVED_FROM
                | WatchFlags::DELETE_SELF
                | WatchFlags::MOVE_SELF
                | WatchFlags::ONLYDIR;
            match add_watch(fd, dir.as_path(), flags) {
                Ok(wd) => {
                    self.watches.insert(wd, dir.clone());
                }
                Err(e) => warn!(dir = %dir.display(), error = %e, "cannot watch directory (will retry at rescan)"),
            }
        }
    }

    /// Reads inotify: the changes, and whether a full rescan is needed (overflow, a lost watch).
    pub fn on_ready(&mut self) -> (Vec<Change>, bool) {
        use rustix::fs::inotify::{ReadFlags, Reader};
        let mut changes = Vec::new();
        let mut rescan = false;
        let Some(fd) = self.inotify.as_ref() else { return (changes, rescan) };
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let mut reader = Reader::new(fd, &mut buf);
        let mut lost = Vec::new();
        loop {
            match reader.next() {
                Ok(ev) => {
                    let flags = ev.events();
                    if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                        rescan = true;
                        continue;
                    }
                    if flags.intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::IGNORED) {
                        lost.push(ev.wd());
                        rescan = true;
                        continue;
                    }
                    let (Some(dir), Some(name)) = (self.watches.get(&ev.wd()), ev.file_name()) else { continue };
                    let path = dir.join(name.to_string_lossy().as_ref());
                    if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                        let id = path.file_name().and_then(|n| n.to_str()).and_then(|n| self.pattern.guest_id(n));
                        if let Some(id) = id {
                            changes.push(Change::Added(id, path));
                        }
                    } else {
                        changes.push(Change::Removed(path));
                    }
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    warn!(error = %e, "inotify read failed");
                    break;
                }
            }
        }
        for wd in lost {
            self.watches.remove(&wd);
        }
        (changes, rescan)
    }

    /// The sockets whose name matches the pattern in the watched directories now (re-adding lost watches first):
    /// those `known` does not know are returned with their guest id. A rescan of 10,000 sockets runs on the data
    /// plane's thread every `--rescan-secs`, so a known socket costs one lookup: its name is matched without
    /// allocating, one path buffer serves every entry, and only new ones get an id and a path of their own.
    pub fn scan(&mut self, mut known: impl FnMut(&Path) -> bool) -> Vec<(String, PathBuf)> {
        use std::os::unix::fs::FileTypeExt;
        self.add_watches();
        let mut new = Vec::new();
        let mut path = PathBuf::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str().filter(|n| self.pattern.is_match(n)) else { continue };
                if !entry.file_type().is_ok_and(|t| t.is_socket()) {
                    continue;
                }
                path.as_mut_os_string().clear();
                path.push(dir);
                path.push(name);
                if !known(&path) {
                    if let Some(id) = self.pattern.guest_id(name) {
                        new.push((id, path.clone()));
                    }
                }
            }
        }
        new
    }
}
