//! `ready.presence` as docs/protocol.md states it: the members of the user's small spaces
//! who are not offline, the user themself included (they are a member too); a user in
//! no space gets none (the field is omitted).

use flowline_protocol::ws::{PresenceStatus, ServerEvent};
use flowline_server::Phase;

use crate::util::{Ws, start};

fn presence_of(ready: &ServerEvent) -> Vec<(i64, PresenceStatus)> {
    let ServerEvent::Ready { presence, .. } = ready else {
        panic!("not ready: {ready:?}");
    };
    let mut p: Vec<_> = presence.iter().map(|p| (p.user_id, p.status)).collect();
    p.sort_by_key(|(u, _)| *u);
    p
}

#[tokio::test]
async fn ready_presence_includes_the_user() {
    let (node, _db) = start(Phase::Single).await;
    let a = node.user("alice").await;
    let b = node.user("bob").await;
    let loner = node.user("loner").await;
    let space = node.space(&a, "guild").await;
    node.join(&b, &space).await;

    let (_wa, ready) = Ws::hello(&node.ws, &a.token).await;
    assert_eq!(
        presence_of(&ready),
        [(a.user.id, PresenceStatus::Online)],
        "alice alone online: herself"
    );
    let (_wb, ready) = Ws::hello(&node.ws, &b.token).await;
    assert_eq!(
        presence_of(&ready),
        [
            (a.user.id, PresenceStatus::Online),
            (b.user.id, PresenceStatus::Online)
        ],
        "bob: alice and himself"
    );
    let (_wl, ready) = Ws::hello(&node.ws, &loner.token).await;
    assert_eq!(
        presence_of(&ready),
        [],
        "no space, no co-member, not even oneself"
    );
    node.stop().await;
}
