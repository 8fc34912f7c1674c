//! Chat features through the real node with real WebSocket clients, in both storage
//! phases: presence, typing, message kinds, edit/delete, reactions, threads.

use std::time::Duration;

use flowline_protocol::api::{Channel, Session, Space};
use flowline_protocol::ws::{
    ClientOp, ErrorCode, Message, MessageKind, MessageRef, PresenceStatus, Quote, ServerEvent,
};
use flowline_server::Phase;

use crate::util::{Node, Ws, start_with};

/// Ids of the users and channels most tests share.
struct World {
    a: Session,
    b: Session,
    /// Not a member of `space`.
    c: Session,
    space: Space,
    ch: Channel,
    ch2: Channel,
}

async fn world(node: &Node) -> World {
    let a = node.user("ann").await;
    let b = node.user("bob").await;
    let c = node.user("cyd").await;
    let space = node.space(&a, "guild").await;
    node.join(&b, &space).await;
    let ch = node.channel(&a, &space, "general", None).await;
    let ch2 = node.channel(&a, &space, "random", None).await;
    // cyd lives in a space of their own.
    let other = node.space(&c, "elsewhere").await;
    node.channel(&c, &other, "lobby", None).await;
    World {
        a,
        b,
        c,
        space,
        ch,
        ch2,
    }
}

fn is_error(req: u64) -> impl Fn(&ServerEvent) -> bool {
    move |e| matches!(e, ServerEvent::Error { req_id: Some(r), .. } if *r == req)
}

/// Send `op` and return the error code it is answered with.
async fn refused(ws: &mut Ws, req: u64, op: &ClientOp) -> ErrorCode {
    ws.op(op).await;
    match ws.until("an error", is_error(req)).await {
        ServerEvent::Error { code, .. } => code,
        _ => unreachable!(),
    }
}

async fn ack(ws: &mut Ws, req: u64) -> (i64, i64) {
    match ws
        .until(
            "an ack",
            |e| matches!(e, ServerEvent::Ack { req_id, .. } | ServerEvent::Error { req_id: Some(req_id), .. } if *req_id == req),
        )
        .await
    {
        ServerEvent::Ack { id, seq, .. } => (id, seq),
        other => panic!("send {req} refused: {other:?}"),
    }
}

async fn ok(ws: &mut Ws, req: u64) {
    let ev = ws
        .until(
            "ok",
            |e| matches!(e, ServerEvent::Ok { req_id } | ServerEvent::Error { req_id: Some(req_id), .. } if *req_id == req),
        )
        .await;
    assert!(matches!(ev, ServerEvent::Ok { .. }), "{ev:?}");
}

fn send(req_id: u64, channel: i64, body: &str) -> ClientOp {
    ClientOp::send_text(req_id, channel, body.into(), None)
}

fn send_kind(req_id: u64, channel: i64, body: &str, kind: MessageKind) -> ClientOp {
    let mut op = send(req_id, channel, body);
    if let ClientOp::Send { kind: k, .. } = &mut op {
        *k = kind;
    }
    op
}

async fn history(ws: &mut Ws, req: u64, channel: i64) -> Vec<Message> {
    ws.op(&ClientOp::History {
        req_id: req,
        channel,
        before: None,
        after: None,
        limit: None,
    })
    .await;
    match ws
        .until("history", |e| matches!(e, ServerEvent::History { req_id, .. } | ServerEvent::Error { req_id: Some(req_id), .. } if *req_id == req))
        .await
    {
        ServerEvent::History { messages, .. } => messages,
        other => panic!("history refused: {other:?}"),
    }
}

fn presence_of(user: i64, status: PresenceStatus) -> impl Fn(&ServerEvent) -> bool {
    move |e| matches!(e, ServerEvent::Presence(p) if p.user_id == user && p.status == status)
}

const GRACE: Duration = Duration::from_millis(600);

async fn presence_reaches_space_members_without_flapping(phase: Phase) {
    let (node, _db) = start_with(phase, |c| {
        c.features.presence_grace = GRACE;
    })
    .await;
    let w = world(&node).await;
    let (mut b, _) = Ws::hello(&node.ws, &w.b.token).await;
    let (mut c, _) = Ws::hello(&node.ws, &w.c.token).await;
    let (mut a, ready) = Ws::hello(&node.ws, &w.a.token).await;
    // ann's snapshot shows bob (shares the space), not cyd.
    let ServerEvent::Ready { presence, .. } = ready else {
        unreachable!()
    };
    assert!(
        presence
            .iter()
            .any(|p| p.user_id == w.b.user.id && p.status == PresenceStatus::Online),
        "{presence:?}"
    );
    assert!(
        presence.iter().all(|p| p.user_id != w.c.user.id),
        "{presence:?}"
    );
    b.until(
        "ann online",
        presence_of(w.a.user.id, PresenceStatus::Online),
    )
    .await;
    // cyd shares no space with ann: nothing about her reaches him.
    let leaked = c.drain_for(GRACE).await;
    assert!(
        !leaked
            .iter()
            .any(|e| matches!(e, ServerEvent::Presence(p) if p.user_id == w.a.user.id)),
        "{leaked:?}"
    );

    // A quick reconnect (well inside the grace period) causes no offline and no online.
    a.inner.close(None).await.unwrap();
    drop(a);
    let (mut a, _) = Ws::hello(&node.ws, &w.a.token).await;
    let seen = b.drain_for(GRACE + Duration::from_millis(400)).await;
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, ServerEvent::Presence(p) if p.user_id == w.a.user.id)),
        "flapped: {seen:?}"
    );

    // Chosen status and custom text reach members; too long a text is refused.
    a.op(&ClientOp::SetPresence {
        req_id: Some(1),
        status: PresenceStatus::Dnd,
        custom: Some("deep work".into()),
    })
    .await;
    ok(&mut a, 1).await;
    let ev = b
        .until("ann dnd", presence_of(w.a.user.id, PresenceStatus::Dnd))
        .await;
    assert!(matches!(ev, ServerEvent::Presence(p) if p.custom.as_deref() == Some("deep work")));
    let long = ClientOp::SetPresence {
        req_id: Some(2),
        status: PresenceStatus::Online,
        custom: Some("x".repeat(500)),
    };
    assert_eq!(refused(&mut a, 2, &long).await, ErrorCode::TooLong);

    // Leaving for good: offline after the grace period, and out of new snapshots.
    a.inner.close(None).await.unwrap();
    drop(a);
    b.until(
        "ann offline",
        presence_of(w.a.user.id, PresenceStatus::Offline),
    )
    .await;
    let (_b2, ready) = Ws::hello(&node.ws, &w.b.token).await;
    let ServerEvent::Ready { presence, .. } = ready else {
        unreachable!()
    };
    assert!(
        presence.iter().all(|p| p.user_id != w.a.user.id),
        "{presence:?}"
    );
    node.stop().await;
}
crate::both_phases!(presence_reaches_space_members_without_flapping);

async fn hello_without_presence_gets_an_empty_snapshot_and_still_the_events(phase: Phase) {
    let (node, _db) = start_with(phase, |c| {
        c.features.presence_grace = GRACE;
    })
    .await;
    let w = world(&node).await;
    let (mut b, _) = Ws::hello(&node.ws, &w.b.token).await;
    let mut a = Ws::connect(&node.ws).await;
    a.op(&ClientOp::Hello {
        token: w.a.token.clone(),
        v: flowline_protocol::PROTOCOL_VERSION,
        resume: Default::default(),
        subscribe_all: true,
        presence: false,
    })
    .await;
    let ready = a.next().await.unwrap();
    let ServerEvent::Ready { presence, .. } = ready else {
        panic!("expected ready, got {ready:?}")
    };
    // bob is online and shares the space, yet the snapshot was declined.
    assert!(presence.is_empty(), "{presence:?}");
    // ann is still announced to bob, and bob's changes still reach ann.
    b.until(
        "ann online",
        presence_of(w.a.user.id, PresenceStatus::Online),
    )
    .await;
    b.op(&ClientOp::SetPresence {
        req_id: Some(1),
        status: PresenceStatus::Dnd,
        custom: None,
    })
    .await;
    a.until("bob dnd", presence_of(w.b.user.id, PresenceStatus::Dnd))
        .await;
    node.stop().await;
}
crate::both_phases!(hello_without_presence_gets_an_empty_snapshot_and_still_the_events);

/// A space above `presence_max_space` is lazy: no pushed presence, nothing in
/// `ready.presence`; `get_presence` answers for users sharing a space, and only them.
async fn presence_in_large_spaces_is_asked_for(phase: Phase) {
    let (node, _db) = start_with(phase, |c| {
        c.features.presence_grace = GRACE;
        // The world's space (ann, bob) is small; with dan it is large.
        c.features.presence_max_space = 2;
    })
    .await;
    let w = world(&node).await;
    let (mut b, _) = Ws::hello(&node.ws, &w.b.token).await;
    let (mut a, _) = Ws::hello(&node.ws, &w.a.token).await;
    b.until(
        "ann online",
        presence_of(w.a.user.id, PresenceStatus::Online),
    )
    .await;
    let dan = node.user("dan").await;
    node.join(&dan, &w.space).await;
    let (_d, ready) = Ws::hello(&node.ws, &dan.token).await;
    let ServerEvent::Ready { presence, .. } = ready else {
        unreachable!()
    };
    assert!(
        presence.is_empty(),
        "large space: no snapshot, got {presence:?}"
    );
    let (_c, _) = Ws::hello(&node.ws, &w.c.token).await;
    let ask = ClientOp::GetPresence {
        req_id: 7,
        users: vec![dan.user.id, w.c.user.id, w.b.user.id, dan.user.id],
    };
    a.op(&ask).await;
    let answer = a
        .until("presence_list", |e| {
            matches!(e, ServerEvent::PresenceList { .. })
        })
        .await;
    let ServerEvent::PresenceList { req_id, presence } = answer else {
        unreachable!()
    };
    assert_eq!(req_id, 7);
    let users: Vec<i64> = presence.iter().map(|p| p.user_id).collect();
    // cyd is online but shares no space with ann; dan's connect was not pushed.
    assert_eq!(users, [dan.user.id, w.b.user.id]);
    let pushed = a.drain_for(Duration::from_millis(300)).await;
    assert!(
        !pushed
            .iter()
            .any(|e| matches!(e, ServerEvent::Presence(p) if p.user_id == dan.user.id)),
        "{pushed:?}"
    );
    let too_many = ClientOp::GetPresence {
        req_id: 8,
        users: (0..1001).collect(),
    };
    assert_eq!(refused(&mut a, 8, &too_many).await, ErrorCode::TooLong);
    node.stop().await;
}
crate::both_phases!(presence_in_large_spaces_is_asked_for);

async fn inactivity_turns_idle_and_activity_back_online(phase: Phase) {
    let (node, _db) = start_with(phase, |c| {
        c.features.idle_after = Duration::from_millis(400);
    })
    .await;
    let w = world(&node).await;
    let (mut b, _) = Ws::hello(&node.ws, &w.b.token).await;
    let (mut a, _) = Ws::hello(&node.ws, &w.a.token).await;
    b.until("ann idle", presence_of(w.a.user.id, PresenceStatus::Idle))
        .await;
    a.op(&send(1, w.ch.id, "back")).await;
    ack(&mut a, 1).await;
    b.until(
        "ann online again",
        presence_of(w.a.user.id, PresenceStatus::Online),
    )
    .await;
    node.stop().await;
}
crate::both_phases!(inactivity_turns_idle_and_activity_back_online);

async fn typing_is_throttled_members_only_and_never_stored(phase: Phase) {
    let interval = Duration::from_millis(800);
    let (node, _db) = start_with(phase, |c| {
        c.features.typing_interval = interval;
    })
    .await;
    let w = world(&node).await;
    let (mut a, _) = Ws::hello(&node.ws, &w.a.token).await;
    let (mut b, _) = Ws::hello(&node.ws, &w.b.token).await;
    let (mut c, _) = Ws::hello(&node.ws, &w.c.token).await;
    for _ in 0..5 {
        a.op(&ClientOp::Typing { channel: w.ch.id }).await;
    }
    let typing = |e: &ServerEvent| matches!(e, ServerEvent::Typing { .. });
    let first = b.until("typing", typing).await;
    assert_eq!(
        first,
        ServerEvent::Typing {
            channel: w.ch.id,
            user_id: w.a.user.id,
            expires_ms: 8000
        }
    );
    let more = b.drain_for(interval / 2).await;
    assert_eq!(more.iter().filter(|e| typing(e)).count(), 0, "{more:?}");
    // After the interval, the next one passes again.
    tokio::time::sleep(interval).await;
    a.op(&ClientOp::Typing { channel: w.ch.id }).await;
    b.until("second typing", typing).await;
    // A non-member is refused, and sees nothing.
    c.op(&ClientOp::Typing { channel: w.ch.id }).await;
    let ev = c
        .until("refusal", |e| matches!(e, ServerEvent::Error { .. }))
        .await;
    assert!(
        matches!(
            ev,
            ServerEvent::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(
        !c.drain_for(Duration::from_millis(200))
            .await
            .iter()
            .any(typing)
    );
    // Nothing was stored: the channel has no message and no seq was used.
    assert!(history(&mut b, 9, w.ch.id).await.is_empty());
    let (_, body) = node
        .get_raw(
            &format!("/spaces/{}/channels", w.space.id),
            Some(&w.b.token),
        )
        .await;
    let channels: Vec<Channel> = serde_json::from_str(&body).unwrap();
    assert!(channels.iter().all(|c| c.last_seq == 0), "{channels:?}");
    node.stop().await;
}
crate::both_phases!(typing_is_throttled_members_only_and_never_stored);

async fn message_kinds_and_their_errors(phase: Phase) {
    let (node, _db) = start_with(phase, |_| {}).await;
    let w = world(&node).await;
    let secret = node.channel(&w.a, &w.space, "secret", Some(vec![])).await;
    let (mut a, _) = Ws::hello(&node.ws, &w.a.token).await;
    let (mut b, _) = Ws::hello(&node.ws, &w.b.token).await;
    a.op(&send(1, w.ch.id, "hello brave new world")).await;
    let (m1, _) = ack(&mut a, 1).await;
    a.op(&send(2, w.ch2.id, "elsewhere")).await;
    let (other, _) = ack(&mut a, 2).await;
    a.op(&send(3, secret.id, "only ann reads this")).await;
    let (hidden, _) = ack(&mut a, 3).await;

    // markdown: stored raw, length-limited.
    b.op(&send_kind(
        10,
        w.ch.id,
        "**bold** _it_",
        MessageKind::Markdown,
    ))
    .await;
    ack(&mut b, 10).await;
    let long = send_kind(11, w.ch.id, &"x".repeat(4001), MessageKind::Markdown);
    assert_eq!(refused(&mut b, 11, &long).await, ErrorCode::TooLong);

    // reply: same channel, existing message.
    let reply = |req, to: Option<i64>, channel| {
        let mut op = send_kind(req, channel, "indeed", MessageKind::Reply);
        if let ClientOp::Send { reply_to, .. } = &mut op {
            *reply_to = to;
        }
        op
    };
    b.op(&reply(20, Some(m1), w.ch.id)).await;
    ack(&mut b, 20).await;
    let inv = ErrorCode::InvalidReference;
    assert_eq!(
        refused(&mut b, 21, &reply(21, Some(other), w.ch.id)).await,
        inv
    );
    assert_eq!(
        refused(&mut b, 22, &reply(22, Some(999_999), w.ch.id)).await,
        inv
    );
    assert_eq!(refused(&mut b, 23, &reply(23, None, w.ch.id)).await, inv);
    let mut stray = send(24, w.ch.id, "text with a reply_to");
    if let ClientOp::Send { reply_to, .. } = &mut stray {
        *reply_to = Some(m1);
    }
    assert_eq!(refused(&mut b, 24, &stray).await, inv);

    // quote: the excerpt must occur in the quoted message.
    let quote = |req, id, excerpt: &str| {
        let mut op = send_kind(req, w.ch.id, "so true", MessageKind::Quote);
        if let ClientOp::Send { quote, .. } = &mut op {
            *quote = Some(Quote {
                id,
                excerpt: excerpt.into(),
            });
        }
        op
    };
    b.op(&quote(30, m1, "brave new")).await;
    ack(&mut b, 30).await;
    assert_eq!(refused(&mut b, 31, &quote(31, m1, "old world")).await, inv);
    assert_eq!(
        refused(&mut b, 32, &quote(32, other, "elsewhere")).await,
        inv
    );
    assert_eq!(refused(&mut b, 33, &quote(33, m1, "")).await, inv);

    // forward: from a readable message into a channel one can post in.
    let forward = |req, from: MessageRef, to| {
        let mut op = send_kind(req, to, "", MessageKind::Forward);
        if let ClientOp::Send { forward_of, .. } = &mut op {
            *forward_of = Some(from);
        }
        op
    };
    let from_ch = MessageRef {
        channel: w.ch.id,
        id: m1,
    };
    b.op(&forward(40, from_ch, w.ch2.id)).await;
    ack(&mut b, 40).await;
    let hidden_ref = MessageRef {
        channel: secret.id,
        id: hidden,
    };
    assert_eq!(
        refused(&mut b, 41, &forward(41, hidden_ref, w.ch2.id)).await,
        inv
    );
    let wrong_channel = MessageRef {
        channel: w.ch.id,
        id: other,
    };
    assert_eq!(
        refused(&mut b, 42, &forward(42, wrong_channel, w.ch2.id)).await,
        inv
    );
    assert_eq!(
        refused(&mut b, 43, &forward(43, from_ch, secret.id)).await,
        ErrorCode::Forbidden
    );
    // A deleted message cannot be referenced.
    a.op(&ClientOp::Delete {
        req_id: 44,
        channel: w.ch2.id,
        id: other,
    })
    .await;
    ok(&mut a, 44).await;
    let deleted_ref = MessageRef {
        channel: w.ch2.id,
        id: other,
    };
    assert_eq!(
        refused(&mut b, 45, &forward(45, deleted_ref, w.ch.id)).await,
        inv
    );

    // History carries each kind with its references.
    let h = history(&mut b, 50, w.ch.id).await;
    let kinds: Vec<MessageKind> = h.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            MessageKind::Text,
            MessageKind::Markdown,
            MessageKind::Reply,
            MessageKind::Quote
        ]
    );
    assert_eq!(h[1].body, "**bold** _it_");
    assert_eq!(h[2].reply_to, Some(m1));
    assert_eq!(
        h[3].quote.as_ref().map(|q| q.excerpt.as_str()),
        Some("brave new")
    );
    let h2 = history(&mut b, 51, w.ch2.id).await;
    let fwd = h2.last().unwrap();
    assert_eq!(fwd.kind, MessageKind::Forward);
    assert_eq!(fwd.body, "hello brave new world");
    let origin = fwd.forwarded_from.as_ref().unwrap();
    assert_eq!(
        (origin.channel, origin.id, origin.author),
        (w.ch.id, m1, w.a.user.id)
    );
    node.stop().await;
}
crate::both_phases!(message_kinds_and_their_errors);

async fn edit_and_delete_by_author_only(phase: Phase) {
    let (node, _db) = start_with(phase, |_| {}).await;
    let w = world(&node).await;
    let (mut a, _) = Ws::hello(&node.ws, &w.a.token).await;
    let (mut b, _) = Ws::hello(&node.ws, &w.b.token).await;
    a.op(&send(1, w.ch.id, "frist")).await;
    let (m1, s1) = ack(&mut a, 1).await;
    a.op(&send(2, w.ch.id, "oops")).await;
    let (m2, s2) = ack(&mut a, 2).await;
    let edit = |req, id, body: &str| ClientOp::Edit {
        req_id: req,
        channel: w.ch.id,
        id,
        body: body.into(),
    };
    let delete = |req, id| ClientOp::Delete {
        req_id: req,
        channel: w.ch.id,
        id,
    };
    assert_eq!(
        refused(&mut b, 3, &edit(3, m1, "pwned")).await,
        ErrorCode::Forbidden
    );
    assert_eq!(
        refused(&mut b, 4, &delete(4, m1)).await,
        ErrorCode::Forbidden
    );
    assert_eq!(
        refused(&mut a, 5, &edit(5, 999_999, "x")).await,
        ErrorCode::NotFound
    );
    a.op(&edit(6, m1, "first")).await;
    ok(&mut a, 6).await;
    let ev = b
        .until("edited", |e| matches!(e, ServerEvent::MessageEdited { .. }))
        .await;
    assert!(
        matches!(&ev, ServerEvent::MessageEdited { id, seq, body, .. } if *id == m1 && *seq == s1 && body == "first"),
        "{ev:?}"
    );
    a.op(&delete(7, m2)).await;
    ok(&mut a, 7).await;
    let ev = b
        .until("deleted", |e| {
            matches!(e, ServerEvent::MessageDeleted { .. })
        })
        .await;
    assert!(matches!(ev, ServerEvent::MessageDeleted { id, seq, .. } if id == m2 && seq == s2));
    assert_eq!(
        refused(&mut a, 8, &edit(8, m2, "undo")).await,
        ErrorCode::InvalidReference
    );
    assert_eq!(
        refused(&mut a, 9, &delete(9, m2)).await,
        ErrorCode::InvalidReference
    );
    // Seqs never change: the next message takes the next seq.
    a.op(&send(10, w.ch.id, "third")).await;
    let (_, s3) = ack(&mut a, 10).await;
    assert_eq!((s1, s2, s3), (1, 2, 3));
    let h = history(&mut b, 11, w.ch.id).await;
    assert_eq!(h.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(h[0].body, "first");
    assert!(h[0].edited_at.is_some() && h[0].deleted_at.is_none());
    assert_eq!(h[1].body, "");
    assert!(h[1].deleted_at.is_some());
    // The HTTP history agrees.
    let (status, body) = node
        .get_raw(&format!("/channels/{}/messages", w.ch.id), Some(&w.b.token))
        .await;
    assert_eq!(status, 200);
    let http: Vec<Message> = serde_json::from_str(&body).unwrap();
    assert_eq!(http, h);
    node.stop().await;
}
crate::both_phases!(edit_and_delete_by_author_only);

async fn reactions_are_unique_under_concurrent_adds(phase: Phase) {
    let (node, _db) = start_with(phase, |_| {}).await;
    let w = world(&node).await;
    let (mut a, _) = Ws::hello(&node.ws, &w.a.token).await;
    a.op(&send(1, w.ch.id, "react to me")).await;
    let (m1, _) = ack(&mut a, 1).await;
    // bob adds the same emoji from 4 sessions at once, 5 times each.
    let mut tasks = Vec::new();
    for s in 0..4u64 {
        let (url, token, ch) = (node.ws.clone(), w.b.token.clone(), w.ch.id);
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = Ws::hello(&url, &token).await;
            for i in 0..5u64 {
                ws.op(&ClientOp::React {
                    req_id: s * 100 + i,
                    channel: ch,
                    id: m1,
                    emoji: "👍".into(),
                })
                .await;
            }
            for i in 0..5u64 {
                ok(&mut ws, s * 100 + i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Exactly one `reaction` event for bob's 20 adds.
    let events = a.drain_for(Duration::from_millis(300)).await;
    let adds: Vec<&ServerEvent> = events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Reaction { user_id, .. } if *user_id == w.b.user.id))
        .collect();
    assert_eq!(adds.len(), 1, "{events:?}");
    assert!(matches!(
        adds[0],
        ServerEvent::Reaction {
            added: true,
            count: 1,
            ..
        }
    ));
    a.op(&ClientOp::React {
        req_id: 2,
        channel: w.ch.id,
        id: m1,
        emoji: "👍".into(),
    })
    .await;
    ok(&mut a, 2).await;
    a.op(&ClientOp::React {
        req_id: 3,
        channel: w.ch.id,
        id: m1,
        emoji: ":party:".into(),
    })
    .await;
    ok(&mut a, 3).await;
    let h = history(&mut a, 4, w.ch.id).await;
    let counts: Vec<(&str, u32)> = h[0]
        .reactions
        .iter()
        .map(|r| (r.emoji.as_str(), r.count))
        .collect();
    assert_eq!(counts, [("👍", 2), (":party:", 1)]);
    a.op(&ClientOp::Unreact {
        req_id: 5,
        channel: w.ch.id,
        id: m1,
        emoji: "👍".into(),
    })
    .await;
    ok(&mut a, 5).await;
    let ev = a
        .until("unreact", |e| {
            matches!(e, ServerEvent::Reaction { added: false, .. })
        })
        .await;
    assert!(
        matches!(ev, ServerEvent::Reaction { count: 1, .. }),
        "{ev:?}"
    );
    // Bad emoji, unknown message, non-member.
    let bad = ClientOp::React {
        req_id: 6,
        channel: w.ch.id,
        id: m1,
        emoji: "lol".into(),
    };
    assert_eq!(refused(&mut a, 6, &bad).await, ErrorCode::BadRequest);
    let missing = ClientOp::React {
        req_id: 7,
        channel: w.ch.id,
        id: 999_999,
        emoji: "👍".into(),
    };
    assert_eq!(refused(&mut a, 7, &missing).await, ErrorCode::NotFound);
    let (mut c, _) = Ws::hello(&node.ws, &w.c.token).await;
    let outsider = ClientOp::React {
        req_id: 8,
        channel: w.ch.id,
        id: m1,
        emoji: "👍".into(),
    };
    assert_eq!(refused(&mut c, 8, &outsider).await, ErrorCode::Forbidden);
    node.stop().await;
}
crate::both_phases!(reactions_are_unique_under_concurrent_adds);

async fn thread_seqs_are_independent_of_the_parent(phase: Phase) {
    let (node, _db) = start_with(phase, |_| {}).await;
    let w = world(&node).await;
    let (mut a, _) = Ws::hello(&node.ws, &w.a.token).await;
    let (mut b, _) = Ws::hello(&node.ws, &w.b.token).await;
    a.op(&send(1, w.ch.id, "start here")).await;
    let (m1, s1) = ack(&mut a, 1).await;
    a.op(&send(2, w.ch.id, "later")).await;
    ack(&mut a, 2).await;
    a.op(&ClientOp::StartThread {
        req_id: 3,
        channel: w.ch.id,
        id: m1,
        name: Some("details".into()),
    })
    .await;
    let answer = a
        .until("thread_created", |e| {
            matches!(
                e,
                ServerEvent::ThreadCreated {
                    req_id: Some(3),
                    ..
                }
            )
        })
        .await;
    let ServerEvent::ThreadCreated { thread, seq, .. } = answer else {
        unreachable!()
    };
    assert_eq!(seq, s1);
    let t = thread.channel;
    let seen = b
        .until("thread_created", |e| {
            matches!(e, ServerEvent::ThreadCreated { .. })
        })
        .await;
    assert!(
        matches!(&seen, ServerEvent::ThreadCreated { req_id: None, thread, .. } if thread.channel == t)
    );
    // Starting again answers with the same thread.
    a.op(&ClientOp::StartThread {
        req_id: 4,
        channel: w.ch.id,
        id: m1,
        name: None,
    })
    .await;
    let again = a
        .until("thread_created", |e| {
            matches!(
                e,
                ServerEvent::ThreadCreated {
                    req_id: Some(4),
                    ..
                }
            )
        })
        .await;
    assert!(matches!(again, ServerEvent::ThreadCreated { thread, .. } if thread.channel == t));

    // Members of the parent can subscribe and post; seqs start at 1.
    for ws in [&mut a, &mut b] {
        ws.op(&ClientOp::Subscribe {
            req_id: Some(5),
            channels: vec![t],
        })
        .await;
        ws.until("subscribed", |e| {
            matches!(e, ServerEvent::Subscribed { .. })
        })
        .await;
    }
    let mut seqs = Vec::new();
    for i in 0..3 {
        b.op(&send(10 + i, t, &format!("reply {i}"))).await;
        seqs.push(ack(&mut b, 10 + i).await.1);
    }
    assert_eq!(seqs, [1, 2, 3]);
    let upd = a
        .until(
            "thread_updated 3",
            |e| matches!(e, ServerEvent::ThreadUpdated { thread, .. } if thread.replies == 3),
        )
        .await;
    assert!(
        matches!(upd, ServerEvent::ThreadUpdated { channel, id, seq, .. } if channel == w.ch.id && id == m1 && seq == s1)
    );
    // The parent's seqs go on from where they were.
    a.op(&send(20, w.ch.id, "parent again")).await;
    assert_eq!(ack(&mut a, 20).await.1, 3);
    let h = history(&mut a, 21, w.ch.id).await;
    let summary = h[0].thread.as_ref().expect("parent carries its thread");
    assert_eq!((summary.channel, summary.replies), (t, 3));
    assert!(summary.last_reply_at.is_some());
    assert_eq!(summary.name.as_deref(), Some("details"));
    assert_eq!(history(&mut b, 22, t).await.len(), 3);

    // Outsiders cannot read it; threads do not nest; the parent must exist.
    let (mut c, _) = Ws::hello(&node.ws, &w.c.token).await;
    let sub = ClientOp::Subscribe {
        req_id: Some(30),
        channels: vec![t],
    };
    assert_eq!(refused(&mut c, 30, &sub).await, ErrorCode::Forbidden);
    let nested = ClientOp::StartThread {
        req_id: 31,
        channel: t,
        id: h[0].id,
        name: None,
    };
    assert_eq!(
        refused(&mut a, 31, &nested).await,
        ErrorCode::InvalidReference
    );
    let (reply_id, _) = {
        b.op(&send(32, t, "in thread")).await;
        ack(&mut b, 32).await
    };
    let nested = ClientOp::StartThread {
        req_id: 33,
        channel: t,
        id: reply_id,
        name: None,
    };
    assert_eq!(
        refused(&mut b, 33, &nested).await,
        ErrorCode::InvalidReference
    );
    let missing = ClientOp::StartThread {
        req_id: 34,
        channel: w.ch.id,
        id: 999_999,
        name: None,
    };
    assert_eq!(
        refused(&mut a, 34, &missing).await,
        ErrorCode::InvalidReference
    );
    // A fresh session subscribed to everything gets the thread too.
    let (_, ready) = Ws::hello(&node.ws, &w.b.token).await;
    assert!(matches!(ready, ServerEvent::Ready { channels, .. } if channels.get(&t) == Some(&4)));
    node.stop().await;
}
crate::both_phases!(thread_seqs_are_independent_of_the_parent);
