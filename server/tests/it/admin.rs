//! Admin bulk provisioning: secret checks, users with working tokens, spaces, channels, DMs.

use flowline_protocol::api::{
    ADMIN_HEADER, Provision, ProvisionChannel, ProvisionSpace, Provisioned,
};
use flowline_protocol::ws::ServerEvent;
use flowline_server::Phase;

use crate::util::{ADMIN, Node, Ws, start, test_config};

pub fn plan(prefix: &str, users: u32) -> Provision {
    Provision {
        username_prefix: prefix.into(),
        users,
        spaces: vec![ProvisionSpace {
            name: "load".into(),
            members: (0..users).collect(),
            channels: vec![
                ProvisionChannel {
                    name: "general".into(),
                    members: None,
                },
                ProvisionChannel {
                    name: "secret".into(),
                    members: Some(vec![0, 1]),
                },
            ],
        }],
        dms: vec![(0, 2)],
    }
}

pub async fn provision_works(node: &Node) {
    let url = node.url("/admin/provision");
    let no_header = node
        .client
        .post(&url)
        .json(&plan("p", 3))
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), 403);
    let wrong = node
        .client
        .post(&url)
        .header(ADMIN_HEADER, "nope")
        .json(&plan("p", 3))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let out_of_range = Provision {
        dms: vec![(0, 9)],
        ..plan("q", 3)
    };
    let resp = node
        .client
        .post(&url)
        .header(ADMIN_HEADER, ADMIN)
        .json(&out_of_range)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let resp = node
        .client
        .post(&url)
        .header(ADMIN_HEADER, ADMIN)
        .json(&plan("p", 3))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: Provisioned = resp.json().await.unwrap();
    assert_eq!(got.users.len(), 3);
    assert_eq!(got.spaces.len(), 1);
    assert_eq!(got.spaces[0].channels.len(), 2);
    assert_eq!(got.dms.len(), 1);
    // Same prefix again: names taken.
    let again = node
        .client
        .post(&url)
        .header(ADMIN_HEADER, ADMIN)
        .json(&plan("p", 3))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    let (general, secret, dm) = (
        got.spaces[0].channels[0],
        got.spaces[0].channels[1],
        got.dms[0],
    );
    // User 2 reads general and the DM, not the private channel; user 1 reads general + secret.
    let (_ws, ready) = Ws::hello(&node.ws, &got.users[2].token).await;
    let ServerEvent::Ready {
        channels, user_id, ..
    } = ready
    else {
        panic!()
    };
    assert_eq!(user_id, got.users[2].id);
    assert_eq!(channels.keys().copied().collect::<Vec<_>>(), {
        let mut v = vec![general, dm];
        v.sort();
        v
    });
    let (_ws, ready) = Ws::hello(&node.ws, &got.users[1].token).await;
    let ServerEvent::Ready { channels, .. } = ready else {
        panic!()
    };
    assert_eq!(
        channels.keys().copied().collect::<Vec<_>>(),
        vec![general, secret]
    );
}

async fn provision(phase: Phase) {
    let (node, _db) = start(phase).await;
    provision_works(&node).await;
    node.stop().await;
}
crate::both_phases!(provision);

#[tokio::test]
async fn provision_disabled_without_secret() {
    let mut config = test_config(Phase::Single);
    config.admin_secret = None;
    let node = Node::start(config).await;
    let resp = node
        .client
        .post(node.url("/admin/provision"))
        .header(ADMIN_HEADER, "x")
        .json(&plan("p", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    node.stop().await;
}

/// 10k users and 300 channels in one request (Postgres: a handful of UNNEST inserts).
async fn provision_ten_thousand_users(phase: Phase) {
    let (node, _db) = start(phase).await;
    let mut p = plan("big", 10_000);
    p.spaces[0].channels = (0..300)
        .map(|i| ProvisionChannel {
            name: format!("c{i}"),
            members: None,
        })
        .collect();
    let t0 = std::time::Instant::now();
    let resp = node
        .client
        .post(node.url("/admin/provision"))
        .header(ADMIN_HEADER, ADMIN)
        .json(&p)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    eprintln!(
        "provisioned 10k users + 300 channels ({phase:?}) in {:?}",
        t0.elapsed()
    );
    let got: Provisioned = resp.json().await.unwrap();
    assert_eq!(got.users.len(), 10_000);
    assert_eq!(got.spaces[0].channels.len(), 300);
    // The last user's token works and sees every public channel.
    let (_ws, ready) = Ws::hello(&node.ws, &got.users[9_999].token).await;
    let ServerEvent::Ready { channels, .. } = ready else {
        panic!()
    };
    assert_eq!(channels.len(), 300, "every public channel");
    node.stop().await;
}
crate::both_phases!(provision_ten_thousand_users);

/// A huge `users` count is refused before anything is allocated for it (it used to abort
/// the node), and generated names follow the sign-up rules.
#[tokio::test]
async fn provision_bounds_users_and_applies_username_rules() {
    let node = Node::start(test_config(Phase::Single)).await;
    let post = |body: serde_json::Value| {
        node.client
            .post(node.url("/admin/provision"))
            .header(ADMIN_HEADER, ADMIN)
            .json(&body)
            .send()
    };
    for users in [u64::from(u32::MAX), 100_001] {
        let resp = post(serde_json::json!({"username_prefix": "max-", "users": users}))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "users {users}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "bad_request", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("100000"),
            "{body}"
        );
    }
    let long = "x".repeat(98);
    for prefix in ["a b", "tab\t", "ctl\u{1}", long.as_str()] {
        let resp = post(serde_json::json!({"username_prefix": prefix, "users": 200}))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "prefix {prefix:?}");
    }
    let bad_space = serde_json::json!({"username_prefix": "s-", "users": 1,
        "spaces": [{"name": "", "members": [0], "channels": []}]});
    assert_eq!(post(bad_space).await.unwrap().status(), 400);
    // Nothing was created by the refused requests; the node is alive and serves.
    let ok = post(serde_json::json!({"username_prefix": "a-", "users": 2}))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // 98 + 2 digits = 100 characters: the longest valid name.
    let edge = post(serde_json::json!({"username_prefix": long, "users": 100}))
        .await
        .unwrap();
    assert_eq!(edge.status(), 200);
    node.stop().await;
}
