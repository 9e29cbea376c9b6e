//! The HTTP/1.1 client of `vigild status`, `vigild vote` and `vigild maintenance`: hyper over the admin UNIX
//! socket, one request per connection, the answer's body bounded (16 MiB) and decoded by hyper (chunked or not).

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// The largest answer read.
const MAX_ANSWER: usize = 16 << 20;

/// Sends `method path` with an optional JSON body; returns the status code and the body. Not for use from within
/// an async runtime (it runs one of its own).
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        match tokio::time::timeout(timeout, exchange(socket, method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer from {} within {timeout:?}", socket.display())),
        }
    })
}

async fn exchange(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("{}: {e} (is vigild running?)", socket.display()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "localhost")
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .map_err(|e| e.to_string())?;
    let answer = sender.send_request(req).await.map_err(|e| format!("sending the request: {e}"))?;
    let code = answer.status().as_u16();
    let bytes = Limited::new(answer.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_answer_with_multibyte_text_is_read_whole() {
        // an answer whose chunk boundaries fall inside multi-byte characters: hyper decodes bytes, then the text is
        // made of the whole body (the hand-written reader sliced decoded text by wire counts and could panic)
        let dir = std::env::temp_dir().join(format!("vigil-client-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut c, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let text = "é€😀".repeat(10);
            let bytes = text.as_bytes();
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for part in bytes.chunks(3) {
                out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            c.write_all(&out).unwrap();
        });
        let (code, body) = request(&sock, "GET", "/x", None, Duration::from_secs(10)).unwrap();
        server.join().unwrap();
        assert_eq!((code, body), (200, "é€😀".repeat(10)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
