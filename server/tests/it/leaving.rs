//! Leaving a space ends posting at once: a session opened before its user left keeps
//! receiving until it reconnects (documented), but every write op it sends afterwards
//! (send, edit, delete, react, unreact, start_thread, typing) is refused `forbidden`.

use flowline_protocol::ws::{ClientOp, ErrorCode, ServerEvent};
use flowline_server::Phase;

use crate::util::{Ws, start};

/// Expect an `error` event with this code and req_id (other events skipped).
async fn expect_refused(ws: &mut Ws, code: ErrorCode, req_id: Option<u64>, what: &str) {
    let ev = ws
        .until(what, |e| {
            matches!(
                e,
                ServerEvent::Error { .. }
                    | ServerEvent::Ack { .. }
                    | ServerEvent::Ok { .. }
                    | ServerEvent::ThreadCreated { .. }
            )
        })
        .await;
    match ev {
        ServerEvent::Error {
            code: c, req_id: r, ..
        } => assert_eq!((c, r), (code, req_id), "{what}"),
        other => panic!("{what}: expected error {code:?}, got {other:?}"),
    }
}

async fn write_ops_refused_after_leave(phase: Phase) {
    let (node, _db) = start(phase).await;
    let owner = node.user("owner").await;
    let member = node.user("member").await;
    let space = node.space(&owner, "guild").await;
    node.join(&member, &space).await;
    let public = node.channel(&owner, &space, "general", None).await;

    // The member posts (so the session has used its access) before leaving.
    let (mut ws, _) = Ws::hello(&node.ws, &member.token).await;
    ws.send(1, public.id, "before").await;
    let ServerEvent::Ack { id: mine, .. } = ws
        .until("ack", |e| matches!(e, ServerEvent::Ack { .. }))
        .await
    else {
        unreachable!()
    };
    let s = node
        .client
        .post(node.url(&format!("/spaces/{}/leave", space.id)))
        .bearer_auth(&member.token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 204);

    ws.send(2, public.id, "after").await;
    expect_refused(&mut ws, ErrorCode::Forbidden, Some(2), "send").await;
    ws.op(&ClientOp::Edit {
        req_id: 3,
        channel: public.id,
        id: mine,
        body: "edited".into(),
    })
    .await;
    expect_refused(&mut ws, ErrorCode::Forbidden, Some(3), "edit").await;
    ws.op(&ClientOp::React {
        req_id: 4,
        channel: public.id,
        id: mine,
        emoji: "👍".into(),
    })
    .await;
    expect_refused(&mut ws, ErrorCode::Forbidden, Some(4), "react").await;
    ws.op(&ClientOp::Unreact {
        req_id: 5,
        channel: public.id,
        id: mine,
        emoji: "👍".into(),
    })
    .await;
    expect_refused(&mut ws, ErrorCode::Forbidden, Some(5), "unreact").await;
    ws.op(&ClientOp::StartThread {
        req_id: 6,
        channel: public.id,
        id: mine,
        name: None,
    })
    .await;
    expect_refused(&mut ws, ErrorCode::Forbidden, Some(6), "start_thread").await;
    ws.op(&ClientOp::Typing { channel: public.id }).await;
    expect_refused(&mut ws, ErrorCode::Forbidden, None, "typing").await;
    ws.op(&ClientOp::Delete {
        req_id: 7,
        channel: public.id,
        id: mine,
    })
    .await;
    expect_refused(&mut ws, ErrorCode::Forbidden, Some(7), "delete").await;

    // Nothing was stored: the owner's history holds only the message sent before.
    let (_, body) = node
        .get_raw(
            &format!("/channels/{}/messages", public.id),
            Some(&owner.token),
        )
        .await;
    assert!(body.contains("before") && !body.contains("after") && !body.contains("edited"));
    node.stop().await;
}
crate::both_phases!(write_ops_refused_after_leave);
