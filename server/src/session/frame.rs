//! Reading client frames before they are ops: the nesting pre-check, telling an unknown
//! op from a malformed known one, and finding the `req_id` to answer an error with.

use flowline_protocol::ws::{ClientOp, ErrorCode};

/// Does `text` nest arrays/objects deeper than `max`? Scans without parsing, so a
/// hostile frame costs one pass and no recursion.
pub(super) fn json_depth_exceeds(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

const KNOWN_OPS: [&str; 13] = [
    "hello",
    "subscribe",
    "unsubscribe",
    "send",
    "history",
    "ping",
    "edit",
    "delete",
    "react",
    "unreact",
    "start_thread",
    "typing",
    "set_presence",
];

/// Tell an unknown op from a malformed known one.
pub(super) fn classify_bad_frame(text: &str, err: &serde_json::Error) -> (ErrorCode, String) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return (ErrorCode::BadRequest, format!("not valid JSON: {err}"));
    };
    match value.get("type").and_then(|t| t.as_str()) {
        Some(t) if !KNOWN_OPS.contains(&t) => (ErrorCode::UnknownOp, format!("unknown op {t:?}")),
        Some(_) => (ErrorCode::BadRequest, format!("invalid fields: {err}")),
        None => (
            ErrorCode::BadRequest,
            "a frame must be a JSON object with a string \"type\"".into(),
        ),
    }
}

pub(super) fn probe_req_id(text: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        req_id: Option<serde_json::Value>,
    }
    serde_json::from_str::<Probe>(text)
        .ok()
        .and_then(|p| p.req_id)
        .and_then(|v| v.as_u64())
}

pub(super) fn op_req_id(op: &ClientOp) -> Option<u64> {
    match op {
        ClientOp::Hello { .. } => None,
        ClientOp::Typing { .. } => None,
        ClientOp::Subscribe { req_id, .. }
        | ClientOp::Unsubscribe { req_id, .. }
        | ClientOp::SetPresence { req_id, .. }
        | ClientOp::Ping { req_id, .. } => *req_id,
        ClientOp::Send { req_id, .. }
        | ClientOp::History { req_id, .. }
        | ClientOp::Edit { req_id, .. }
        | ClientOp::Delete { req_id, .. }
        | ClientOp::React { req_id, .. }
        | ClientOp::Unreact { req_id, .. }
        | ClientOp::StartThread { req_id, .. }
        | ClientOp::GetPresence { req_id, .. } => Some(*req_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_scan_ignores_strings() {
        assert!(!json_depth_exceeds(r#"{"a":[1,{"b":"[[[[[[["}]}"#, 3));
        assert!(json_depth_exceeds(r#"{"a":[[[1]]]}"#, 3));
        assert!(!json_depth_exceeds(r#"{"a":"\"{{{{"}"#, 1));
    }

    #[test]
    fn bad_frames_are_classified() {
        let e = serde_json::from_str::<ClientOp>("{}").unwrap_err();
        assert_eq!(
            classify_bad_frame(r#"{"type":"dance"}"#, &e).0,
            ErrorCode::UnknownOp
        );
        assert_eq!(
            classify_bad_frame(r#"{"type":"send","req_id":"x"}"#, &e).0,
            ErrorCode::BadRequest
        );
        assert_eq!(classify_bad_frame("nope", &e).0, ErrorCode::BadRequest);
        assert_eq!(
            probe_req_id(r#"{"type":"send","req_id":7,"channel":"x"}"#),
            Some(7)
        );
    }
}
