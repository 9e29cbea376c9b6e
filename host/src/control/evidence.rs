//! Evidence saved before a destructive corrective action (issue #23): the console screenshot as PNG and the serial
//! console's last lines, one directory per action under `STATE_DIR/evidence/<guest>/`, pruned by age and total
//! size, and found again for the admin API. Blocking file work: callers run it off the async runtime.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

/// Console bytes kept (the end of the log).
pub const CONSOLE_TAIL_BYTES: u64 = 64 * 1024;
/// Console lines kept.
pub const CONSOLE_TAIL_LINES: usize = 200;

/// A guest id as a directory name (ids come from socket names or the configuration, never from the guest, but a
/// path stays a path).
pub fn dir_name(id: &str) -> String {
    let s: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).take(128).collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Writes what there is into `dir` (the screenshot as `screen.png`, the console's tail as `console.txt`, and
/// `notes.txt` saying what could not be saved); returns the files written.
pub fn save(dir: &Path, shot: Result<(String, Vec<u8>), String>, console: Option<&Path>, guest: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut notes = Vec::new();
    if let Err(e) = std::fs::create_dir_all(dir) {
        warn!(guest = %guest, error = %e, dir = %dir.display(), "evidence: cannot create its directory");
        return files;
    }
    match shot.and_then(|(mime, img)| to_png(&mime, &img)) {
        Ok(png) => match std::fs::write(dir.join("screen.png"), png) {
            Ok(()) => files.push(dir.join("screen.png")),
            Err(e) => notes.push(format!("screenshot not saved: {e}")),
        },
        Err(e) => notes.push(format!("no screenshot: {e}")),
    }
    match console.map(tail) {
        Some(Ok(text)) => match std::fs::write(dir.join("console.txt"), text) {
            Ok(()) => files.push(dir.join("console.txt")),
            Err(e) => notes.push(format!("console not saved: {e}")),
        },
        Some(Err(e)) => notes.push(format!("console log unreadable: {e}")),
        None => notes.push("the domain has no console log file".into()),
    }
    if !notes.is_empty() && std::fs::write(dir.join("notes.txt"), notes.join("\n") + "\n").is_ok() {
        files.push(dir.join("notes.txt"));
    }
    files
}

/// The image as PNG: as is when libvirt gave a PNG, converted from a binary PPM (`P6`, 8-bit) otherwise.
pub fn to_png(mime: &str, img: &[u8]) -> Result<Vec<u8>, String> {
    if img.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(img.to_vec());
    }
    let (w, h, pixels) = parse_ppm(img).ok_or_else(|| format!("unsupported screenshot format {mime:?}"))?;
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().map_err(|e| e.to_string())?;
    wr.write_image_data(pixels).map_err(|e| e.to_string())?;
    wr.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// A binary PPM's width, height and RGB pixels (8-bit only), checked against its length.
fn parse_ppm(b: &[u8]) -> Option<(u32, u32, &[u8])> {
    let mut rest = b.strip_prefix(b"P6")?;
    let mut fields = [0u32; 3];
    for f in &mut fields {
        loop {
            rest = rest.trim_ascii_start();
            if rest.first() == Some(&b'#') {
                let nl = rest.iter().position(|&c| c == b'\n')?;
                rest = &rest[nl..];
            } else {
                break;
            }
        }
        let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        *f = std::str::from_utf8(&rest[..n]).ok()?.parse().ok()?;
        rest = &rest[n..];
    }
    let [w, h, max] = fields;
    rest = rest.get(1..)?; // one whitespace byte
    let len = (w as usize).checked_mul(h as usize)?.checked_mul(3)?;
    (max == 255 && w > 0 && h > 0 && rest.len() >= len).then(|| (w, h, &rest[..len]))
}

/// The last lines of a console log (at most [`CONSOLE_TAIL_BYTES`] and [`CONSOLE_TAIL_LINES`]), as text.
fn tail(path: &Path) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(CONSOLE_TAIL_BYTES)))?;
    let mut buf = Vec::new();
    f.take(CONSOLE_TAIL_BYTES).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(CONSOLE_TAIL_LINES);
    Ok(lines[from..].join("\n") + "\n")
}

/// Removes evidence directories older than `max_age`, then the oldest while the total exceeds `max_bytes`.
pub fn prune(root: &Path, max_bytes: u64, max_age: Duration) {
    let mut all = Vec::new(); // (modified, bytes, dir)
    for guest in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for ev in std::fs::read_dir(guest.path()).into_iter().flatten().flatten() {
            let (mut bytes, mut newest) = (0, UNIX_EPOCH);
            for f in std::fs::read_dir(ev.path()).into_iter().flatten().flatten() {
                if let Ok(m) = f.metadata() {
                    bytes += m.len();
                    newest = newest.max(m.modified().unwrap_or(UNIX_EPOCH));
                }
            }
            all.push((newest, bytes, ev.path()));
        }
    }
    all.sort();
    let mut total: u64 = all.iter().map(|(_, b, _)| b).sum();
    let now = SystemTime::now();
    for (modified, bytes, dir) in all {
        let old = now.duration_since(modified).is_ok_and(|age| age > max_age);
        if (old || total > max_bytes) && std::fs::remove_dir_all(&dir).is_ok() {
            total = total.saturating_sub(bytes);
        }
    }
}

/// Evidence of guest `id`, newest first: each directory's name and its files with their sizes.
pub fn list_evidence(root: &Path, id: &str) -> Vec<(String, Vec<(String, u64)>)> {
    let mut out: Vec<(String, Vec<(String, u64)>)> = std::fs::read_dir(root.join(dir_name(id)))
        .into_iter()
        .flatten()
        .flatten()
        .map(|ev| {
            let mut files: Vec<(String, u64)> = std::fs::read_dir(ev.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|f| (f.file_name().to_string_lossy().into_owned(), f.metadata().map_or(0, |m| m.len())))
                .collect();
            files.sort();
            (ev.file_name().to_string_lossy().into_owned(), files)
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0));
    out
}

/// One evidence file's path, if `name` and `file` name one (no path tricks: both must be plain names).
pub fn evidence_file(root: &Path, id: &str, name: &str, file: &str) -> Option<PathBuf> {
    let plain = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.contains('/') && !s.contains('\\');
    (plain(name) && plain(file)).then(|| root.join(dir_name(id)).join(name).join(file)).filter(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_becomes_a_png_that_decodes() {
        let mut ppm = b"P6\n# a comment\n2 1\n255\n".to_vec();
        ppm.extend_from_slice(&[255, 0, 0, 0, 0, 255]);
        let png = to_png("image/x-portable-pixmap", &ppm).unwrap();
        let dec = png::Decoder::new(&png[..]);
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (2, 1));
        assert_eq!(&buf[..6], &[255, 0, 0, 0, 0, 255]);
        assert!(to_png("image/x-portable-pixmap", b"P6\n2 1\n255\n\x00").is_err(), "short pixel data");
        assert!(to_png("image/bmp", b"BM").is_err());
        assert!(parse_ppm(b"P6\n99999999 99999999\n255\n").is_none());
    }

    #[test]
    fn evidence_names_and_pruning() {
        assert_eq!(dir_name("../etc"), "_.._etc");
        assert_eq!(dir_name("0c0ffee0-1"), "0c0ffee0-1");
        let root = std::env::temp_dir().join(format!("vigil-ev-{}", std::process::id()));
        for (i, size) in [(1, 600), (2, 600), (3, 600)] {
            let d = root.join("g").join(format!("{i}-reset"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("screen.png"), vec![0u8; size]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        prune(&root, 1300, Duration::from_secs(3600));
        let left: Vec<String> = list_evidence(&root, "g").into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, ["3-reset", "2-reset"], "the oldest went");
        assert!(evidence_file(&root, "g", "3-reset", "screen.png").is_some());
        assert!(evidence_file(&root, "g", "..", "screen.png").is_none());
        assert!(evidence_file(&root, "g", "3-reset", "../2-reset/screen.png").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
