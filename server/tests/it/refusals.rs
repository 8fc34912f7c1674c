//! Every authorization refusal and every bad-input case, over HTTP and WebSocket; after
//! each, the node keeps serving others.

use std::time::Duration;

use flowline_protocol::api::{ApiErrorBody, CreateChannel, Credentials};
use flowline_protocol::ws::{ClientOp, ErrorCode, ServerEvent, close};
use flowline_server::Phase;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::util::{Node, Ws, start, test_config};

/// Expect an `error` event with this code (and req_id).
async fn expect_error(ws: &mut Ws, code: ErrorCode, req_id: Option<u64>) {
    match ws.next().await.unwrap() {
        ServerEvent::Error {
            code: c,
            req_id: r,
            message,
            ..
        } => {
            assert_eq!((c, r), (code, req_id), "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected error {code:?}, got {other:?}"),
    }
}

async fn http_refusals(phase: Phase) {
    let (node, _db) = start(phase).await;
    let owner = node.user("owner").await;
    let member = node.user("member").await;
    let stranger = node.user("stranger").await;
    let space = node.space(&owner, "guild").await;
    node.join(&member, &space).await;
    let private = node.channel(&owner, &space, "staff", Some(vec![])).await;
    let public = node.channel(&owner, &space, "general", None).await;

    let err = |status: u16, body: &str| -> (u16, ErrorCode) {
        let b: ApiErrorBody = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (status, b.code)
    };
    // Authentication.
    let (s, b) = node.get_raw("/users/me", None).await;
    assert_eq!(err(s, &b), (401, ErrorCode::InvalidToken));
    let (s, b) = node.get_raw("/users/me", Some("not-a-token")).await;
    assert_eq!(err(s, &b), (401, ErrorCode::InvalidToken));
    let creds = |u: &str, p: &str| Credentials {
        username: u.into(),
        password: p.into(),
    };
    let b: ApiErrorBody = node
        .post("/auth/login", None, &creds("owner", "wrong"), 401)
        .await;
    assert_eq!(b.code, ErrorCode::InvalidCredentials);
    let b: ApiErrorBody = node
        .post("/auth/login", None, &creds("ghost", "x"), 401)
        .await;
    assert_eq!(b.code, ErrorCode::InvalidCredentials);
    let b: ApiErrorBody = node
        .post("/auth/signup", None, &creds("owner", "whatever"), 409)
        .await;
    assert_eq!(b.code, ErrorCode::Conflict);
    let b: ApiErrorBody = node
        .post("/auth/signup", None, &creds("", "whatever"), 400)
        .await;
    assert_eq!(b.code, ErrorCode::TooLong);
    let b: ApiErrorBody = node
        .post("/auth/signup", None, &creds(&"x".repeat(101), "pw"), 400)
        .await;
    assert_eq!(b.code, ErrorCode::TooLong);
    let b: ApiErrorBody = node
        .post("/auth/signup", None, &creds("a b", "pw"), 400)
        .await;
    assert_eq!(b.code, ErrorCode::BadRequest);

    // Space membership.
    for path in [
        format!("/spaces/{}/members", space.id),
        format!("/spaces/{}/channels", space.id),
    ] {
        let (s, b) = node.get_raw(&path, Some(&stranger.token)).await;
        assert_eq!(err(s, &b), (403, ErrorCode::Forbidden), "{path}");
    }
    let (s, b) = node
        .get_raw("/spaces/999999/members", Some(&owner.token))
        .await;
    assert_eq!(err(s, &b), (404, ErrorCode::NotFound));
    let b: ApiErrorBody = node
        .post(
            &format!("/spaces/{}/channels", space.id),
            Some(&stranger.token),
            &CreateChannel {
                name: "x".into(),
                members: None,
            },
            403,
        )
        .await;
    assert_eq!(b.code, ErrorCode::Forbidden);
    let b: ApiErrorBody = node
        .post(
            &format!("/spaces/{}/channels", space.id),
            Some(&owner.token),
            &CreateChannel {
                name: "x".into(),
                members: Some(vec![stranger.user.id]),
            },
            400,
        )
        .await;
    assert_eq!(
        b.code,
        ErrorCode::BadRequest,
        "private members must belong to the space"
    );
    let b: ApiErrorBody = node
        .post("/spaces/999999/join", Some(&stranger.token), &(), 404)
        .await;
    assert_eq!(b.code, ErrorCode::NotFound);

    // Channel reading rights.
    let (s, b) = node
        .get_raw(
            &format!("/channels/{}/messages", public.id),
            Some(&stranger.token),
        )
        .await;
    assert_eq!(err(s, &b), (403, ErrorCode::Forbidden));
    let (s, b) = node
        .get_raw(
            &format!("/channels/{}/messages", private.id),
            Some(&member.token),
        )
        .await;
    assert_eq!(
        err(s, &b),
        (403, ErrorCode::Forbidden),
        "space member outside a private channel"
    );
    let (s, _) = node
        .get_raw(
            &format!("/channels/{}/messages", private.id),
            Some(&owner.token),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = node
        .get_raw("/channels/999999/messages", Some(&owner.token))
        .await;
    assert_eq!(err(s, &b), (404, ErrorCode::NotFound));
    let (s, b) = node
        .get_raw(
            &format!("/spaces/{}/channels", space.id),
            Some(&member.token),
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        !b.contains("staff"),
        "private channel hidden from non-members: {b}"
    );

    // Malformed requests.
    let (s, b) = node
        .get_raw("/channels/abc/messages", Some(&owner.token))
        .await;
    assert_eq!(err(s, &b), (400, ErrorCode::BadRequest));
    let (s, b) = node
        .get_raw(
            &format!("/channels/{}/messages?limit=x", public.id),
            Some(&owner.token),
        )
        .await;
    assert_eq!(err(s, &b), (400, ErrorCode::BadRequest));
    let resp = node
        .client
        .post(node.url("/spaces"))
        .bearer_auth(&owner.token)
        .header("content-type", "application/json")
        .body("{\"name\": 5}")
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    assert_eq!(err(s, &resp.text().await.unwrap()).1, ErrorCode::BadRequest);
    assert!((400..500).contains(&s));
    let resp = node
        .client
        .post(node.url("/auth/signup"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"username\":\"big\",\"password\":\"{}\"}}",
            "x".repeat(2 * 1024 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "a 413 must not leave a half-read connection for keep-alive reuse"
    );
    // Leaving: the owner cannot, a member can and then loses access.
    let b: ApiErrorBody = node
        .post(
            &format!("/spaces/{}/leave", space.id),
            Some(&owner.token),
            &(),
            400,
        )
        .await;
    assert_eq!(b.code, ErrorCode::BadRequest);
    let resp = node
        .client
        .post(node.url(&format!("/spaces/{}/leave", space.id)))
        .bearer_auth(&member.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (s, _) = node
        .get_raw(
            &format!("/channels/{}/messages", public.id),
            Some(&member.token),
        )
        .await;
    assert_eq!(s, 403);
    node.stop().await;
}
crate::both_phases!(http_refusals);

async fn ws_refusals(phase: Phase) {
    let (node, _db) = start(phase).await;
    let owner = node.user("owner").await;
    let member = node.user("member").await;
    let stranger = node.user("stranger").await;
    let space = node.space(&owner, "guild").await;
    node.join(&member, &space).await;
    let private = node.channel(&owner, &space, "staff", Some(vec![])).await;
    let public = node.channel(&owner, &space, "general", None).await;

    // Before hello.
    let mut ws = Ws::connect(&node.ws).await;
    ws.send(1, public.id, "early").await;
    expect_error(&mut ws, ErrorCode::NotAuthenticated, Some(1)).await;
    ws.op(&ClientOp::Hello {
        token: owner.token.clone(),
        v: 1,
        resume: Default::default(),
        subscribe_all: true,
        presence: true,
    })
    .await;
    assert!(matches!(
        ws.next().await.unwrap(),
        ServerEvent::Ready { .. }
    ));
    ws.op(&ClientOp::Hello {
        token: owner.token.clone(),
        v: 1,
        resume: Default::default(),
        subscribe_all: true,
        presence: true,
    })
    .await;
    expect_error(&mut ws, ErrorCode::NotAuthenticated, None).await;

    // Non-members: public channel of a foreign space, private channel, missing channel.
    let (mut st, _) = Ws::hello(&node.ws, &stranger.token).await;
    let (mut mb, _) = Ws::hello(&node.ws, &member.token).await;
    for (who, channel, code) in [
        (0, public.id, ErrorCode::Forbidden),
        (1, private.id, ErrorCode::Forbidden),
        (1, 999_999, ErrorCode::NotFound),
    ] {
        let ws = if who == 0 { &mut st } else { &mut mb };
        ws.op(&ClientOp::Subscribe {
            req_id: Some(10),
            channels: vec![channel],
        })
        .await;
        expect_error(ws, code, Some(10)).await;
        ws.send(11, channel, "hi").await;
        expect_error(ws, code, Some(11)).await;
        ws.op(&ClientOp::History {
            req_id: 12,
            channel,
            before: None,
            after: None,
            limit: None,
        })
        .await;
        expect_error(ws, code, Some(12)).await;
    }
    // Resume of a channel one cannot read: refused, not subscribed.
    let mut r = Ws::connect(&node.ws).await;
    r.op(&ClientOp::Hello {
        token: stranger.token.clone(),
        v: 1,
        resume: [(public.id, 0)].into(),
        subscribe_all: true,
        presence: true,
    })
    .await;
    let ServerEvent::Ready { channels, .. } = r.next().await.unwrap() else {
        panic!()
    };
    assert!(channels.is_empty());
    expect_error(&mut r, ErrorCode::Forbidden, None).await;

    // Bad input on an authenticated session: answered, session stays open.
    ws.raw("this is not json").await;
    expect_error(&mut ws, ErrorCode::BadRequest, None).await;
    ws.raw(r#"{"type":"dance","req_id":4}"#).await;
    expect_error(&mut ws, ErrorCode::UnknownOp, Some(4)).await;
    ws.raw(r#"{"type":"send","req_id":5,"channel":"general","body":"x"}"#)
        .await;
    expect_error(&mut ws, ErrorCode::BadRequest, Some(5)).await;
    ws.raw(r#"{"type":"send","req_id":6,"channel":1}"#).await;
    expect_error(&mut ws, ErrorCode::BadRequest, Some(6)).await;
    ws.raw(r#"[1,2]"#).await;
    expect_error(&mut ws, ErrorCode::BadRequest, None).await;
    ws.send(7, public.id, "").await;
    expect_error(&mut ws, ErrorCode::TooLong, Some(7)).await;
    ws.send(8, public.id, &"é".repeat(4001)).await;
    expect_error(&mut ws, ErrorCode::TooLong, Some(8)).await;
    ws.send(9, public.id, &"é".repeat(4000)).await;
    // The sender's own copy and the ack both arrive (the copy is queued first).
    assert!(matches!(ws.next().await.unwrap(), ServerEvent::Message(m) if m.seq == 1));
    assert!(matches!(
        ws.next().await.unwrap(),
        ServerEvent::Ack {
            req_id: 9,
            seq: 1,
            ..
        }
    ));

    // Fatal input: each closes that session only.
    let deep = format!(
        r#"{{"type":"ping","x":{}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let mut d = Ws::hello(&node.ws, &member.token).await.0;
    d.raw(&deep).await;
    let (code, events) = d.close_code().await;
    assert_eq!(code, close::PROTOCOL_ERROR);
    assert!(
        matches!(
            events.last(),
            Some(ServerEvent::Error {
                code: ErrorCode::TooDeep,
                ..
            })
        ),
        "{events:?}"
    );

    let mut big = Ws::hello(&node.ws, &member.token).await.0;
    big.raw(&format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    ))
    .await;
    assert_eq!(big.close_code().await.0, close::MESSAGE_TOO_BIG);

    let mut bin = Ws::hello(&node.ws, &member.token).await.0;
    bin.inner
        .send(WsMessage::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(bin.close_code().await.0, close::PROTOCOL_ERROR);

    let mut bad = Ws::connect(&node.ws).await;
    bad.op(&ClientOp::Hello {
        token: "nope".into(),
        v: 1,
        resume: Default::default(),
        subscribe_all: true,
        presence: true,
    })
    .await;
    let (code, events) = bad.close_code().await;
    assert_eq!(code, close::AUTH_FAILED);
    assert!(
        matches!(
            events[..],
            [ServerEvent::Error {
                code: ErrorCode::InvalidToken,
                ..
            }]
        ),
        "{events:?}"
    );

    let mut old = Ws::connect(&node.ws).await;
    old.op(&ClientOp::Hello {
        token: owner.token.clone(),
        v: 99,
        resume: Default::default(),
        subscribe_all: true,
        presence: true,
    })
    .await;
    assert_eq!(old.close_code().await.0, close::UNSUPPORTED_VERSION);

    // Everyone else is still served.
    ws.send(20, public.id, "still here").await;
    assert!(matches!(ws.next().await.unwrap(), ServerEvent::Message(m) if m.seq == 2));
    assert!(matches!(
        ws.next().await.unwrap(),
        ServerEvent::Ack {
            req_id: 20,
            seq: 2,
            ..
        }
    ));
    let ServerEvent::Message(m) = mb.next().await.unwrap() else {
        panic!()
    };
    assert_eq!(m.seq, 1);
    node.stop().await;
}
crate::both_phases!(ws_refusals);

#[tokio::test]
async fn auth_deadline_and_dead_peers_are_closed() {
    let mut config = test_config(Phase::Single);
    config.auth_timeout = Duration::from_millis(300);
    config.heartbeat = Duration::from_millis(200);
    let node = Node::start(config).await;
    let user = node.user("u").await;

    let mut silent = Ws::connect(&node.ws).await;
    let t0 = std::time::Instant::now();
    assert_eq!(silent.close_code().await.0, close::AUTH_TIMEOUT);
    assert!(t0.elapsed() >= Duration::from_millis(250));

    // A peer that stops reading (so never answers pings) is dropped with 4009.
    let (mut dead, _) = Ws::hello(&node.ws, &user.token).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(dead.close_code().await.0, close::HEARTBEAT_TIMEOUT);

    // A live peer (the client library answers pings while reading) stays.
    let (mut live, _) = Ws::hello(&node.ws, &user.token).await;
    let reader = tokio::time::timeout(Duration::from_millis(900), live.next()).await;
    assert!(
        reader.is_err(),
        "no event and no close while alive: {reader:?}"
    );
    live.op(&ClientOp::Ping {
        req_id: None,
        ts: None,
    })
    .await;
    assert!(matches!(
        live.next().await.unwrap(),
        ServerEvent::Pong { .. }
    ));

    let metrics = node.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("flowline_auth_timeouts_total") && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("flowline_heartbeat_timeouts_total") && l.ends_with(" 1")),
        "{metrics}"
    );
    node.stop().await;
}
