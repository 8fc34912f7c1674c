//! Uploads over real HTTP (multipart) and attachments on real WebSocket messages, in both
//! storage phases; and the OpenAPI document.

use std::path::Path;
use std::time::Duration;

use flowline_protocol::api::ApiErrorBody;
use flowline_protocol::ws::{Attachment, ClientOp, ErrorCode, ServerEvent};
use flowline_server::Phase;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::util::{Node, Ws, start_with};

const BOUNDARY: &str = "flowline-test-boundary";
const LIMIT: u64 = 64 * 1024;

/// A multipart body with one part.
fn form(field: &str, filename: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(node: &Node, token: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut req = node
        .client
        .post(node.url("/uploads"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn error_code(body: &str) -> ErrorCode {
    serde_json::from_str::<ApiErrorBody>(body)
        .unwrap_or_else(|e| panic!("{e}: {body}"))
        .code
}

/// Every file under `dir`, recursively (relative names).
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

async fn uploads_limits_types_membership_and_no_leftovers(phase: Phase) {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_path_buf();
    let (node, _db) = start_with(phase, |c| {
        c.features.data_dir = dir.clone();
        c.features.upload_max_bytes = LIMIT;
    })
    .await;
    let a = node.user("ann").await;
    let b = node.user("bob").await;
    let c = node.user("cyd").await;
    let space = node.space(&a, "guild").await;
    node.join(&b, &space).await;
    let ch = node.channel(&a, &space, "general", None).await;

    // A good upload: 201, content-addressed file, metadata as stored.
    let png: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (status, body) = upload(
        &node,
        Some(&a.token),
        form("file", "cat.png", "image/png", &png),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let att: Attachment = serde_json::from_str(&body).unwrap();
    let sha = hex::encode(Sha256::digest(&png));
    assert_eq!(
        (
            att.filename.as_str(),
            att.content_type.as_str(),
            att.size,
            att.sha256.as_str()
        ),
        ("cat.png", "image/png", png.len() as u64, sha.as_str())
    );
    assert_eq!(std::fs::read(dir.join("uploads").join(&sha)).unwrap(), png);

    // The uploader can download it; nobody else until a message carries it.
    let get = |token: String, id: i64| {
        let req = node
            .client
            .get(node.url(&format!("/uploads/{id}")))
            .bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let ctype = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, ctype, r.bytes().await.unwrap().to_vec())
        }
    };
    let (status, ctype, bytes) = get(a.token.clone(), att.id).await;
    assert_eq!((status, ctype.as_deref()), (200, Some("image/png")));
    assert_eq!(bytes, png);
    assert_eq!(get(b.token.clone(), att.id).await.0, 403);

    // bob cannot attach ann's file; ann can, and then members can download it.
    let (mut wb, _) = Ws::hello(&node.ws, &b.token).await;
    let with_att = |req, ids: Vec<i64>| {
        let mut op = ClientOp::send_text(req, ch.id, "look".into(), None);
        if let ClientOp::Send { attachments, .. } = &mut op {
            *attachments = ids;
        }
        op
    };
    wb.op(&with_att(1, vec![att.id])).await;
    let ev = wb
        .until("refusal", |e| matches!(e, ServerEvent::Error { .. }))
        .await;
    assert!(
        matches!(
            ev,
            ServerEvent::Error {
                code: ErrorCode::InvalidReference,
                ..
            }
        ),
        "{ev:?}"
    );
    let (mut wa, _) = Ws::hello(&node.ws, &a.token).await;
    wa.op(&with_att(2, vec![att.id])).await;
    wa.until("ack", |e| matches!(e, ServerEvent::Ack { .. }))
        .await;
    let delivered = wb
        .until("message", |e| matches!(e, ServerEvent::Message(_)))
        .await;
    assert!(matches!(&delivered, ServerEvent::Message(m) if m.attachments == vec![att.clone()]));
    assert_eq!(get(b.token.clone(), att.id).await.0, 200);
    assert_eq!(get(c.token.clone(), att.id).await.0, 403);
    assert_eq!(get(a.token.clone(), att.id + 1000).await.0, 404);

    // Refusals: too large, wrong type, no file part, no token. None leaves a file.
    let big = vec![7u8; LIMIT as usize + 1];
    let (status, body) = upload(
        &node,
        Some(&a.token),
        form("file", "big.png", "image/png", &big),
    )
    .await;
    assert_eq!((status, error_code(&body)), (413, ErrorCode::TooLarge));
    let (status, body) = upload(
        &node,
        Some(&a.token),
        form("file", "x.html", "text/html", b"<p>"),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (415, ErrorCode::UnsupportedType)
    );
    let (status, _) = upload(
        &node,
        Some(&a.token),
        form("other", "a.txt", "text/plain", b"hi"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = upload(&node, None, form("file", "a.txt", "text/plain", b"hi")).await;
    assert_eq!(status, 401);

    // A client that goes away halfway through its body.
    let addr = node.http.trim_start_matches("http://").to_owned();
    let partial = form("file", "half.txt", "text/plain", &vec![b'h'; 40_000]);
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/uploads HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        a.token,
        partial.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&partial[..20_000]).await.unwrap();
    sock.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sock);

    // Only the one good file is left: no temp file, no partial or oversize content.
    let expected = vec![format!("uploads/{sha}")];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = files(&dir);
        if now == expected {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "leftovers: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And no row: the next upload takes the very next id.
    let (status, body) = upload(
        &node,
        Some(&a.token),
        form("file", "n.txt", "text/plain; charset=utf-8", b"next"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let next: Attachment = serde_json::from_str(&body).unwrap();
    assert_eq!(next.id, att.id + 1);
    // Identical content is stored once.
    let (status, body) = upload(
        &node,
        Some(&b.token),
        form("file", "again.png", "image/png", &png),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(files(&dir).len(), 2);
    node.stop().await;
}
crate::both_phases!(uploads_limits_types_membership_and_no_leftovers);

#[tokio::test]
async fn openapi_document_covers_the_http_api() {
    let (node, _db) = start_with(Phase::Single, |_| {}).await;
    let (status, body) = node.get_raw("/openapi.json", None).await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in [
        ("post", "/api/v1/auth/signup"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/logout"),
        ("get", "/api/v1/users/me"),
        ("post", "/api/v1/spaces"),
        ("get", "/api/v1/spaces"),
        ("post", "/api/v1/spaces/{id}/join"),
        ("post", "/api/v1/spaces/{id}/leave"),
        ("get", "/api/v1/spaces/{id}/members"),
        ("post", "/api/v1/spaces/{id}/channels"),
        ("get", "/api/v1/spaces/{id}/channels"),
        ("post", "/api/v1/dms"),
        ("get", "/api/v1/channels/{id}/messages"),
        ("post", "/api/v1/uploads"),
        ("get", "/api/v1/uploads/{id}"),
        ("post", "/api/v1/admin/provision"),
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/channels/{id}/messages"),
        ("patch", "/api/v1/channels/{id}/messages/{msg}"),
        ("delete", "/api/v1/channels/{id}/messages/{msg}"),
        (
            "put",
            "/api/v1/channels/{id}/messages/{msg}/reactions/{emoji}",
        ),
        (
            "delete",
            "/api/v1/channels/{id}/messages/{msg}/reactions/{emoji}",
        ),
        ("post", "/api/v1/channels/{id}/messages/{msg}/thread"),
        ("post", "/api/v1/channels/{id}/typing"),
        ("put", "/api/v1/users/me/presence"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(paths.len(), 20, "{:?}", paths.keys().collect::<Vec<_>>());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "Message",
        "Attachment",
        "ApiErrorBody",
        "ErrorCode",
        "Provision",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    // Every documented path is served (no 404 from the router for a documented path).
    let (status, _) = node.get_raw("/users/me", None).await;
    assert_eq!(status, 401);
    node.stop().await;
}
