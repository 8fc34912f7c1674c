//! The chat actions over HTTP (what a bot uses), against memory and Postgres storage:
//! each action's WebSocket event reaches a subscriber in the socket sends' seq space,
//! every refusal is the same over HTTP and WebSocket, and an `Idempotency-Key` makes a
//! retried POST (also concurrent retries) post once.

use flowline_protocol::actions::{EditMessage, PostMessage, SetPresence, StartThread, Thread};
use flowline_protocol::api::{ApiErrorBody, Session};
use flowline_protocol::ws::{
    ClientOp, ErrorCode, Message, MessageKind, MessageRef, PresenceStatus, Quote, ServerEvent,
};
use flowline_server::Phase;
use reqwest::Method;
use serde::Serialize;

use crate::both_phases;
use crate::util::{Node, Ws, start};

/// One HTTP answer: status, headers, body.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.body))
    }

    /// The error code of a refusal.
    pub fn code(&self) -> ErrorCode {
        self.json::<ApiErrorBody>().code
    }
}

/// Send `method path` as `token` with an optional JSON body and extra headers.
pub async fn call(
    node: &Node,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&(impl Serialize + ?Sized)>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = node
        .client
        .request(method, node.url(path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// POST a text message over HTTP, expecting 201.
pub async fn post_text(node: &Node, token: &str, channel: i64, body: &str) -> Message {
    let r = call(
        node,
        Method::POST,
        &format!("/channels/{channel}/messages"),
        token,
        Some(&PostMessage {
            body: body.into(),
            ..Default::default()
        }),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

/// A bot, a human and a stranger; a space with both members and two channels.
struct World {
    bot: Session,
    human: Session,
    stranger: Session,
    channel: i64,
    other: i64,
}

async fn world(node: &Node) -> World {
    let bot = node.user("bot").await;
    let human = node.user("human").await;
    let stranger = node.user("stranger").await;
    let space = node.space(&human, "guild").await;
    node.join(&bot, &space).await;
    let channel = node.channel(&human, &space, "general", None).await.id;
    let other = node.channel(&human, &space, "random", None).await.id;
    World {
        bot,
        human,
        stranger,
        channel,
        other,
    }
}

/// The next event of `ws` that is not presence or typing noise.
async fn next_event(ws: &mut Ws, what: &str, pred: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
    ws.until(what, pred).await
}

async fn every_action_reaches_subscribers(phase: Phase) {
    let (node, _db) = start(phase).await;
    let w = world(&node).await;
    let (mut ws, _) = Ws::hello(&node.ws, &w.human.token).await;
    let ch = w.channel;
    let path = |rest: &str| format!("/channels/{ch}/messages{rest}");

    // Post: the subscriber gets `message`; a socket send continues the same seqs.
    let m = post_text(&node, &w.bot.token, ch, "hello from a bot").await;
    assert_eq!(
        (m.seq, m.author, m.body.as_str()),
        (1, w.bot.user.id, "hello from a bot")
    );
    let ev = next_event(&mut ws, "message", |e| matches!(e, ServerEvent::Message(_))).await;
    assert_eq!(ev, ServerEvent::Message(m.clone()));
    ws.send(1, ch, "human reply").await;
    let ack = next_event(&mut ws, "ack", |e| matches!(e, ServerEvent::Ack { .. })).await;
    let ServerEvent::Ack { seq, .. } = ack else {
        unreachable!()
    };
    assert_eq!(seq, 2, "HTTP and WebSocket sends share one seq space");
    let m2 = post_text(&node, &w.bot.token, ch, "and again").await;
    assert_eq!(m2.seq, 3);
    let ev = next_event(
        &mut ws,
        "message",
        |e| matches!(e, ServerEvent::Message(m) if m.seq == 3),
    )
    .await;
    assert_eq!(ev, ServerEvent::Message(m2));

    // Every kind.
    let kinds = [
        PostMessage {
            body: "**bold**".into(),
            kind: MessageKind::Markdown,
            ..Default::default()
        },
        PostMessage {
            body: "answer".into(),
            kind: MessageKind::Reply,
            reply_to: Some(m.id),
            nonce: Some("r1".into()),
            ..Default::default()
        },
        PostMessage {
            body: "quoting".into(),
            kind: MessageKind::Quote,
            quote: Some(Quote {
                id: m.id,
                excerpt: "from a bot".into(),
            }),
            ..Default::default()
        },
    ];
    for k in &kinds {
        let r = call(&node, Method::POST, &path(""), &w.bot.token, Some(k), &[]).await;
        assert_eq!(r.status, 201, "{:?}: {}", k.kind, r.body);
        let posted: Message = r.json();
        assert_eq!((posted.kind, posted.reply_to), (k.kind, k.reply_to));
        let ev = next_event(&mut ws, "message", |e| matches!(e, ServerEvent::Message(_))).await;
        assert_eq!(ev, ServerEvent::Message(posted));
    }
    let fwd = PostMessage {
        kind: MessageKind::Forward,
        forward_of: Some(MessageRef {
            channel: ch,
            id: m.id,
        }),
        ..Default::default()
    };
    let r = call(
        &node,
        Method::POST,
        &format!("/channels/{}/messages", w.other),
        &w.bot.token,
        Some(&fwd),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let forwarded: Message = r.json();
    assert_eq!(forwarded.body, m.body);
    let ev = next_event(&mut ws, "forwarded message", |e| {
        matches!(e, ServerEvent::Message(_))
    })
    .await;
    assert_eq!(ev, ServerEvent::Message(forwarded));

    // Edit.
    let r = call(
        &node,
        Method::PATCH,
        &path(&format!("/{}", m.id)),
        &w.bot.token,
        Some(&EditMessage {
            body: "edited".into(),
        }),
        &[],
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let ev = next_event(&mut ws, "message_edited", |e| {
        matches!(e, ServerEvent::MessageEdited { .. })
    })
    .await;
    assert!(
        matches!(ev, ServerEvent::MessageEdited { id, ref body, .. } if id == m.id && body == "edited"),
        "{ev:?}"
    );

    // React, twice (idempotent: one event), then unreact.
    let reaction = path(&format!("/{}/reactions/%F0%9F%91%8D", m.id));
    for _ in 0..2 {
        let r = call(
            &node,
            Method::PUT,
            &reaction,
            &w.bot.token,
            None::<&()>,
            &[],
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }
    let r = call(
        &node,
        Method::DELETE,
        &reaction,
        &w.bot.token,
        None::<&()>,
        &[],
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let added = next_event(&mut ws, "reaction", |e| {
        matches!(e, ServerEvent::Reaction { .. })
    })
    .await;
    assert!(
        matches!(added, ServerEvent::Reaction { added: true, count: 1, ref emoji, user_id, .. } if emoji == "👍" && user_id == w.bot.user.id),
        "{added:?}"
    );
    let removed = next_event(&mut ws, "reaction", |e| {
        matches!(e, ServerEvent::Reaction { .. })
    })
    .await;
    assert!(
        matches!(
            removed,
            ServerEvent::Reaction {
                added: false,
                count: 0,
                ..
            }
        ),
        "the second PUT changed nothing: {removed:?}"
    );

    // Thread: 201 and `thread_created`, then 200 with the same thread.
    let thread_path = path(&format!("/{}/thread", m.id));
    let body = StartThread {
        name: Some("follow-up".into()),
    };
    let r = call(
        &node,
        Method::POST,
        &thread_path,
        &w.bot.token,
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let t: Thread = r.json();
    assert_eq!(
        (t.channel, t.id, t.thread.name.as_deref()),
        (ch, m.id, Some("follow-up"))
    );
    let ev = next_event(&mut ws, "thread_created", |e| {
        matches!(e, ServerEvent::ThreadCreated { .. })
    })
    .await;
    assert!(
        matches!(ev, ServerEvent::ThreadCreated { ref thread, .. } if thread.channel == t.thread.channel),
        "{ev:?}"
    );
    let r = call(
        &node,
        Method::POST,
        &thread_path,
        &w.bot.token,
        Some(&StartThread::default()),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json::<Thread>().thread.channel, t.thread.channel);
    // A reply in the thread over HTTP updates the parent's summary for members.
    post_text(&node, &w.bot.token, t.thread.channel, "in the thread").await;
    let ev = next_event(&mut ws, "thread_updated", |e| {
        matches!(e, ServerEvent::ThreadUpdated { .. })
    })
    .await;
    assert!(
        matches!(ev, ServerEvent::ThreadUpdated { ref thread, .. } if thread.replies == 1),
        "{ev:?}"
    );

    // Typing.
    let r = call(
        &node,
        Method::POST,
        &format!("/channels/{ch}/typing"),
        &w.bot.token,
        None::<&()>,
        &[],
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let ev = next_event(&mut ws, "typing", |e| {
        matches!(e, ServerEvent::Typing { .. })
    })
    .await;
    assert!(
        matches!(ev, ServerEvent::Typing { user_id, channel, .. } if user_id == w.bot.user.id && channel == ch),
        "{ev:?}"
    );

    // Presence: the bot holds a socket (so it shows), and sets `dnd` over HTTP.
    let (_bot_ws, _) = Ws::hello(&node.ws, &w.bot.token).await;
    let set = SetPresence {
        status: PresenceStatus::Dnd,
        custom: Some("deploying".into()),
    };
    let r = call(
        &node,
        Method::PUT,
        "/users/me/presence",
        &w.bot.token,
        Some(&set),
        &[],
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let ev = ws
        .until("bot dnd", |e| matches!(e, ServerEvent::Presence(p) if p.user_id == w.bot.user.id && p.status == PresenceStatus::Dnd))
        .await;
    assert!(matches!(ev, ServerEvent::Presence(p) if p.custom.as_deref() == Some("deploying")));

    // Delete.
    let r = call(
        &node,
        Method::DELETE,
        &path(&format!("/{}", m.id)),
        &w.bot.token,
        None::<&()>,
        &[],
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let ev = next_event(&mut ws, "message_deleted", |e| {
        matches!(e, ServerEvent::MessageDeleted { .. })
    })
    .await;
    assert!(
        matches!(ev, ServerEvent::MessageDeleted { id, seq: 1, .. } if id == m.id),
        "{ev:?}"
    );
    node.stop().await;
}
both_phases!(every_action_reaches_subscribers);

/// One action refused over HTTP (status, code) and over WebSocket (code).
async fn ws_code(ws: &mut Ws, op: ClientOp) -> ErrorCode {
    let req = match &op {
        ClientOp::Send { req_id, .. }
        | ClientOp::Edit { req_id, .. }
        | ClientOp::Delete { req_id, .. }
        | ClientOp::React { req_id, .. }
        | ClientOp::Unreact { req_id, .. }
        | ClientOp::StartThread { req_id, .. } => Some(*req_id),
        ClientOp::SetPresence { req_id, .. } => *req_id,
        _ => None,
    };
    ws.op(&op).await;
    let ev = ws
        .until(
            "error",
            |e| matches!(e, ServerEvent::Error { req_id, .. } if *req_id == req),
        )
        .await;
    let ServerEvent::Error { code, .. } = ev else {
        unreachable!()
    };
    code
}

async fn refusals_match_the_websocket(phase: Phase) {
    let (node, _db) = start(phase).await;
    let w = world(&node).await;
    let ch = w.channel;
    let m = post_text(&node, &w.bot.token, ch, "the bot's").await;
    let gone = post_text(&node, &w.bot.token, ch, "to delete").await;
    let r = call(
        &node,
        Method::DELETE,
        &format!("/channels/{ch}/messages/{}", gone.id),
        &w.bot.token,
        None::<&()>,
        &[],
    )
    .await;
    assert_eq!(r.status, 204);
    let (mut human_ws, _) = Ws::hello(&node.ws, &w.human.token).await;
    let (mut stranger_ws, _) = Ws::hello(&node.ws, &w.stranger.token).await;
    let (mut bot_ws, _) = Ws::hello(&node.ws, &w.bot.token).await;
    let send = |req_id, body: &str| ClientOp::send_text(req_id, ch, body.into(), None);
    let post = |body: PostMessage| {
        (
            Method::POST,
            format!("/channels/{ch}/messages"),
            serde_json::to_value(body).unwrap(),
        )
    };
    let edit = |id: i64, body: &str| {
        (
            Method::PATCH,
            format!("/channels/{ch}/messages/{id}"),
            serde_json::json!({"body": body}),
        )
    };
    let react = |id: i64, emoji: &str| {
        (
            Method::PUT,
            format!(
                "/channels/{ch}/messages/{id}/reactions/{}",
                urlencode(emoji)
            ),
            serde_json::Value::Null,
        )
    };

    // (who, HTTP request, the same WebSocket op, expected code)
    type Case<'a> = (
        &'a str,
        (Method, String, serde_json::Value),
        ClientOp,
        ErrorCode,
    );
    let cases: Vec<Case> = vec![
        (
            "stranger",
            post(PostMessage {
                body: "hi".into(),
                ..Default::default()
            }),
            send(1, "hi"),
            ErrorCode::Forbidden,
        ),
        (
            "stranger",
            edit(m.id, "x"),
            ClientOp::Edit {
                req_id: 2,
                channel: ch,
                id: m.id,
                body: "x".into(),
            },
            ErrorCode::Forbidden,
        ),
        (
            "stranger",
            react(m.id, "👍"),
            ClientOp::React {
                req_id: 3,
                channel: ch,
                id: m.id,
                emoji: "👍".into(),
            },
            ErrorCode::Forbidden,
        ),
        (
            "stranger",
            (
                Method::POST,
                format!("/channels/{ch}/messages/{}/thread", m.id),
                serde_json::json!({}),
            ),
            ClientOp::StartThread {
                req_id: 4,
                channel: ch,
                id: m.id,
                name: None,
            },
            ErrorCode::Forbidden,
        ),
        (
            "human",
            edit(m.id, "not mine"),
            ClientOp::Edit {
                req_id: 5,
                channel: ch,
                id: m.id,
                body: "not mine".into(),
            },
            ErrorCode::Forbidden,
        ),
        (
            "human",
            (
                Method::DELETE,
                format!("/channels/{ch}/messages/{}", m.id),
                serde_json::Value::Null,
            ),
            ClientOp::Delete {
                req_id: 6,
                channel: ch,
                id: m.id,
            },
            ErrorCode::Forbidden,
        ),
        (
            "bot",
            post(PostMessage::default()),
            send(7, ""),
            ErrorCode::TooLong,
        ),
        (
            "bot",
            post(PostMessage {
                body: "x".repeat(4001),
                ..Default::default()
            }),
            send(8, &"x".repeat(4001)),
            ErrorCode::TooLong,
        ),
        (
            "bot",
            post(PostMessage {
                body: "r".into(),
                kind: MessageKind::Reply,
                ..Default::default()
            }),
            ClientOp::Send {
                req_id: 9,
                channel: ch,
                body: "r".into(),
                nonce: None,
                kind: MessageKind::Reply,
                reply_to: None,
                quote: None,
                forward_of: None,
                attachments: vec![],
            },
            ErrorCode::InvalidReference,
        ),
        (
            "bot",
            edit(gone.id, "again"),
            ClientOp::Edit {
                req_id: 10,
                channel: ch,
                id: gone.id,
                body: "again".into(),
            },
            ErrorCode::InvalidReference,
        ),
        (
            "bot",
            edit(m.id, ""),
            ClientOp::Edit {
                req_id: 11,
                channel: ch,
                id: m.id,
                body: String::new(),
            },
            ErrorCode::TooLong,
        ),
        (
            "bot",
            edit(999_999, "x"),
            ClientOp::Edit {
                req_id: 12,
                channel: ch,
                id: 999_999,
                body: "x".into(),
            },
            ErrorCode::NotFound,
        ),
        (
            "bot",
            react(m.id, "lol"),
            ClientOp::React {
                req_id: 13,
                channel: ch,
                id: m.id,
                emoji: "lol".into(),
            },
            ErrorCode::BadRequest,
        ),
        (
            "bot",
            react(999_999, "👍"),
            ClientOp::React {
                req_id: 14,
                channel: ch,
                id: 999_999,
                emoji: "👍".into(),
            },
            ErrorCode::NotFound,
        ),
        (
            "bot",
            (
                Method::POST,
                format!("/channels/{ch}/messages/{}/thread", gone.id),
                serde_json::json!({}),
            ),
            ClientOp::StartThread {
                req_id: 15,
                channel: ch,
                id: gone.id,
                name: None,
            },
            ErrorCode::InvalidReference,
        ),
        (
            "bot",
            (
                Method::PUT,
                "/users/me/presence".into(),
                serde_json::json!({"status": "online", "custom": "x".repeat(500)}),
            ),
            ClientOp::SetPresence {
                req_id: Some(16),
                status: PresenceStatus::Online,
                custom: Some("x".repeat(500)),
            },
            ErrorCode::TooLong,
        ),
    ];
    for (who, (method, path, body), op, want) in cases {
        let (token, ws) = match who {
            "stranger" => (&w.stranger.token, &mut stranger_ws),
            "human" => (&w.human.token, &mut human_ws),
            _ => (&w.bot.token, &mut bot_ws),
        };
        let body = (!body.is_null()).then_some(&body);
        let r = call(&node, method.clone(), &path, token, body, &[]).await;
        let status = flowline_server::status_of(want).as_u16();
        assert_eq!(
            (r.status, r.code()),
            (status, want),
            "{who} {method} {path}: {}",
            r.body
        );
        assert_eq!(
            ws_code(ws, op).await,
            want,
            "{who}: the WebSocket op of {method} {path}"
        );
    }
    // Input the WebSocket cannot even express: a bad path id, unknown fields.
    let r = call(
        &node,
        Method::POST,
        "/channels/abc/messages",
        &w.bot.token,
        Some(&serde_json::json!({"body": "x"})),
        &[],
    )
    .await;
    assert_eq!((r.status, r.code()), (400, ErrorCode::BadRequest));
    let r = call(
        &node,
        Method::POST,
        &format!("/channels/{ch}/messages"),
        &w.bot.token,
        Some(&serde_json::json!({"body": "x", "bogus": 1})),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (400, ErrorCode::BadRequest),
        "{}",
        r.body
    );
    let r = call(
        &node,
        Method::POST,
        &format!("/channels/{ch}/messages"),
        "no-such-token",
        Some(&serde_json::json!({"body": "x"})),
        &[],
    )
    .await;
    assert_eq!((r.status, r.code()), (401, ErrorCode::InvalidToken));
    // Nothing refused was posted: the channel holds the two messages of the setup.
    let (status, history) = node
        .get_raw(&format!("/channels/{ch}/messages"), Some(&w.bot.token))
        .await;
    assert_eq!(status, 200);
    let history: Vec<Message> = serde_json::from_str(&history).unwrap();
    assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    node.stop().await;
}
both_phases!(refusals_match_the_websocket);

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b':' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn idempotent_retries_post_once(phase: Phase) {
    let (node, _db) = start(phase).await;
    let w = world(&node).await;
    let ch = w.channel;
    let (mut ws, _) = Ws::hello(&node.ws, &w.human.token).await;
    let path = format!("/channels/{ch}/messages");
    let body = PostMessage {
        body: "exactly once".into(),
        nonce: Some("bot-1".into()),
        ..Default::default()
    };
    // Eight concurrent tries with one key, then a late retry.
    let tries: Vec<_> = (0..8)
        .map(|_| {
            call(
                &node,
                Method::POST,
                &path,
                &w.bot.token,
                Some(&body),
                &[("Idempotency-Key", "deploy-42")],
            )
        })
        .collect();
    let mut replies = futures_util::future::join_all(tries).await;
    replies.push(
        call(
            &node,
            Method::POST,
            &path,
            &w.bot.token,
            Some(&body),
            &[("Idempotency-Key", "deploy-42")],
        )
        .await,
    );
    let first: Message = replies[0].json();
    let mut fresh = 0;
    for r in &replies {
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(
            r.json::<Message>(),
            first,
            "every try answers the one message"
        );
        if r.header("idempotent-replayed") != Some("true") {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one try posted");
    let ev = ws
        .until("message", |e| matches!(e, ServerEvent::Message(_)))
        .await;
    assert_eq!(ev, ServerEvent::Message(first.clone()));
    // The same key for another request is refused; another key posts again.
    let other = PostMessage {
        body: "different".into(),
        ..Default::default()
    };
    let r = call(
        &node,
        Method::POST,
        &path,
        &w.bot.token,
        Some(&other),
        &[("Idempotency-Key", "deploy-42")],
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (409, ErrorCode::Conflict),
        "{}",
        r.body
    );
    let r = call(
        &node,
        Method::POST,
        &path,
        &w.bot.token,
        Some(&body),
        &[("Idempotency-Key", "deploy-43")],
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json::<Message>().seq, 2);
    // Another user's same key is theirs; a bad key is refused before anything is done.
    let r = call(
        &node,
        Method::POST,
        &path,
        &w.human.token,
        Some(&body),
        &[("Idempotency-Key", "deploy-42")],
    )
    .await;
    assert_eq!((r.status, r.header("idempotent-replayed")), (201, None));
    let r = call(
        &node,
        Method::POST,
        &path,
        &w.bot.token,
        Some(&body),
        &[("Idempotency-Key", "has space")],
    )
    .await;
    assert_eq!((r.status, r.code()), (400, ErrorCode::BadRequest));
    // A refused request is recorded too: its retry is refused the same way.
    let empty = PostMessage::default();
    for _ in 0..2 {
        let r = call(
            &node,
            Method::POST,
            &path,
            &w.bot.token,
            Some(&empty),
            &[("Idempotency-Key", "empty")],
        )
        .await;
        assert_eq!((r.status, r.code()), (400, ErrorCode::TooLong));
    }
    let (_, history) = node
        .get_raw(&format!("/channels/{ch}/messages"), Some(&w.bot.token))
        .await;
    let history: Vec<Message> = serde_json::from_str(&history).unwrap();
    assert_eq!(history.len(), 3, "one post per key: {history:?}");
    // The subscriber saw each message once.
    let events = ws.drain_for(std::time::Duration::from_millis(300)).await;
    let messages = events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Message(_)))
        .count();
    assert_eq!(messages, 2, "{events:?}");
    node.stop().await;
}
both_phases!(idempotent_retries_post_once);
