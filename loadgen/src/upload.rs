//! Attachment uploads (`POST /api/v1/uploads`, multipart with one field named `file`),
//! shared by the WebSocket feature personas and the HTTP personas.

use flowline_protocol::AttachmentId;

/// Size of an uploaded test file.
pub const UPLOAD_BYTES: usize = 4096;

/// Multipart boundary used by the load generator.
pub const BOUNDARY: &str = "flowline-loadgen-7d1c0b5e";

/// `Content-Type` header of [`multipart_body`].
pub fn content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A multipart body with one field `file`: `filename`, `text/plain`, `len` bytes.
pub fn multipart_body(filename: &str, len: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(len + 256);
    b.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\n"
        )
        .as_bytes(),
    );
    b.extend(b"flowline load test upload\n".iter().cycle().take(len));
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

/// `http://host:port` of a node from its WebSocket URL (`ws://host:port/ws`).
pub fn http_base(ws_url: &str) -> String {
    let rest = ws_url
        .strip_prefix("ws://")
        .map(|r| format!("http://{r}"))
        .or_else(|| {
            ws_url
                .strip_prefix("wss://")
                .map(|r| format!("https://{r}"))
        })
        .unwrap_or_else(|| ws_url.to_string());
    match rest.find("://").map(|i| i + 3) {
        Some(i) => match rest[i..].find('/') {
            Some(j) => rest[..i + j].to_string(),
            None => rest,
        },
        None => rest,
    }
}

/// Upload one file; `Err(kind)` names the error kind (`upload:http_404`, `upload:io`, ...).
pub async fn upload(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    filename: &str,
) -> Result<AttachmentId, String> {
    let resp = client
        .post(format!("{base}/api/v1/uploads"))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, content_type())
        .body(multipart_body(filename, UPLOAD_BYTES))
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "upload:timeout".to_string()
            } else {
                "upload:io".to_string()
            }
        })?;
    let status = resp.status();
    if status != reqwest::StatusCode::CREATED {
        return Err(format!("upload:http_{}", status.as_u16()));
    }
    let a: flowline_protocol::ws::Attachment = resp
        .json()
        .await
        .map_err(|_| "upload:bad_answer".to_string())?;
    Ok(a.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_base_from_ws_url() {
        assert_eq!(http_base("ws://127.0.0.1:8080/ws"), "http://127.0.0.1:8080");
        assert_eq!(http_base("ws://h:1"), "http://h:1");
        assert_eq!(http_base("wss://h/ws"), "https://h");
    }

    #[test]
    fn multipart_has_one_file_field() {
        let b = String::from_utf8(multipart_body("a.txt", 10)).unwrap();
        assert!(b.starts_with(&format!("--{BOUNDARY}\r\n")));
        assert!(b.contains("name=\"file\"; filename=\"a.txt\""));
        assert!(b.ends_with(&format!("--{BOUNDARY}--\r\n")));
        assert_eq!(b.matches(BOUNDARY).count(), 2);
    }
}
