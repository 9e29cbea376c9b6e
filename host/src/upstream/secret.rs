//! [`SecretFile`]: a credential kept in a file (a bearer token, a password), read again whenever the file
//! changes, so that rotating a secret needs no restart. Errors name the file, never its content.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A secret and the file it comes from.
#[derive(Debug)]
pub struct SecretFile {
    path: PathBuf,
    value: String,
    /// The file's modification time and length when it was read.
    seen: Option<(SystemTime, u64)>,
}

impl SecretFile {
    /// Reads `path` (trimmed); an unreadable file is an error now, at start.
    pub fn open(path: &Path) -> Result<Self, String> {
        let mut s = SecretFile { path: path.to_path_buf(), value: String::new(), seen: None };
        s.reload()?;
        Ok(s)
    }

    fn stamp(&self) -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    fn reload(&mut self) -> Result<(), String> {
        let seen = self.stamp();
        let text = std::fs::read_to_string(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.value = text.trim().to_string();
        self.seen = seen;
        Ok(())
    }

    /// The secret, read again first if the file changed since; `true` with it when it did change. A file that
    /// cannot be read now keeps the last value (logged by the caller's failed request, not here).
    pub fn get(&mut self) -> (&str, bool) {
        let changed = self.stamp() != self.seen && self.reload().is_ok();
        (&self.value, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_secret_is_read_again_and_a_missing_file_keeps_the_last() {
        let dir = std::env::temp_dir().join(format!("vigil-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let mut s = SecretFile::open(&path).unwrap();
        assert_eq!(s.get(), ("first", false));
        std::fs::write(&path, "second-and-longer\n").unwrap();
        assert_eq!(s.get(), ("second-and-longer", true));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(s.get().0, "second-and-longer");
        assert!(SecretFile::open(&path).unwrap_err().contains("token"), "the error names the file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
