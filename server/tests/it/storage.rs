//! One storage test suite, run against both implementations (in memory and Postgres on
//! a fresh database per test).

use std::collections::BTreeSet;
use std::sync::Arc;

use flowline_protocol::api::{ChannelKind, Provision, ProvisionChannel, ProvisionSpace};
use flowline_server::StorageError;
use flowline_server::storage::{MemoryStorage, NewMessage, Storage};

use crate::util::TestDb;

async fn with_storage<F, Fut>(phase: flowline_server::Phase, f: F)
where
    F: FnOnce(Arc<dyn Storage>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    match phase {
        flowline_server::Phase::Postgres => {
            let db = TestDb::new().await;
            let s: Arc<dyn Storage> = Arc::new(db.storage().await);
            f(s).await;
            drop(db);
        }
        _ => f(Arc::new(MemoryStorage::new())).await,
    }
}

fn msg(channel: i64, author: i64, body: &str) -> NewMessage {
    NewMessage::text(
        channel,
        author,
        body.into(),
        Some("n".into()),
        1_700_000_000_000,
    )
}

async fn users_and_tokens(phase: flowline_server::Phase) {
    with_storage(phase, |s| async move {
        let a = s.create_user("ann", "hash-a").await.unwrap();
        assert!(matches!(
            s.create_user("ann", "x").await,
            Err(StorageError::Conflict(_))
        ));
        let (u, h) = s.user_credentials("ann").await.unwrap().unwrap();
        assert_eq!((u.id, h.as_deref()), (a.id, Some("hash-a")));
        assert!(s.user_credentials("nobody").await.unwrap().is_none());
        assert_eq!(s.user(a.id).await.unwrap().unwrap().username, "ann");
        let t = [7u8; 32];
        s.insert_token(a.id, t).await.unwrap();
        assert_eq!(s.user_by_token(t).await.unwrap().unwrap().id, a.id);
        assert!(s.user_by_token([8u8; 32]).await.unwrap().is_none());
        let b = s.create_user("bob", "hash-b").await.unwrap();
        s.insert_token(b.id, [9u8; 32]).await.unwrap();
        let mut both = s.users_by_tokens(&[[9u8; 32], [8u8; 32], t]).await.unwrap();
        both.sort_by_key(|(_, u)| u.id);
        assert_eq!(both, [(t, a.clone()), ([9u8; 32], b)]);
        assert!(s.delete_token(t).await.unwrap());
        assert!(!s.delete_token(t).await.unwrap());
        assert!(s.user_by_token(t).await.unwrap().is_none());
        s.ping().await.unwrap();
    })
    .await;
}
crate::both_phases!(users_and_tokens);

async fn spaces_channels_and_reading_rights(phase: flowline_server::Phase) {
    with_storage(phase, |s| async move {
        let a = s.create_user("a", "h").await.unwrap().id;
        let b = s.create_user("b", "h").await.unwrap().id;
        let c = s.create_user("c", "h").await.unwrap().id;
        let space = s.create_space(a, "guild").await.unwrap();
        assert_eq!(s.space(space.id).await.unwrap().unwrap().owner, a);
        assert!(s.is_space_member(space.id, a).await.unwrap());
        assert!(!s.is_space_member(space.id, b).await.unwrap());
        s.join_space(space.id, b).await.unwrap();
        s.join_space(space.id, b).await.unwrap(); // idempotent
        assert!(matches!(
            s.join_space(9999, b).await,
            Err(StorageError::NotFound(_))
        ));
        let members: Vec<i64> = s
            .space_members(space.id)
            .await
            .unwrap()
            .iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(members, [a, b]);
        assert_eq!(s.spaces_of(b).await.unwrap().len(), 1);

        let public = s
            .create_channel(space.id, "general", ChannelKind::Public, &[])
            .await
            .unwrap();
        let private = s
            .create_channel(space.id, "staff", ChannelKind::Private, &[a])
            .await
            .unwrap();
        assert!(s.can_read(public.id, a).await.unwrap());
        assert!(s.can_read(public.id, b).await.unwrap());
        assert!(
            !s.can_read(public.id, c).await.unwrap(),
            "non-member of the space"
        );
        assert!(s.can_read(private.id, a).await.unwrap());
        assert!(
            !s.can_read(private.id, b).await.unwrap(),
            "space member, not channel member"
        );
        assert!(!s.can_read(424_242, a).await.unwrap(), "missing channel");
        let listed: Vec<i64> = s
            .space_channels(space.id, b)
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed, [public.id]);

        let (dm, created) = s.open_dm(a, c).await.unwrap();
        assert!(created);
        assert_eq!(dm.kind, ChannelKind::Dm);
        let (again, created) = s.open_dm(c, a).await.unwrap();
        assert!(!created);
        assert_eq!(again.id, dm.id);
        assert!(s.open_dm(a, a).await.is_err());
        assert!(s.can_read(dm.id, a).await.unwrap() && s.can_read(dm.id, c).await.unwrap());
        assert!(
            !s.can_read(dm.id, b).await.unwrap(),
            "a DM has exactly its two users"
        );

        let readable: BTreeSet<i64> = s.readable_channels(a).await.unwrap().into_iter().collect();
        assert_eq!(readable, BTreeSet::from([public.id, private.id, dm.id]));
        let readable_c: Vec<i64> = s.readable_channels(c).await.unwrap();
        assert_eq!(readable_c, [dm.id]);

        // The batched forms (a connect storm's sign-in) answer exactly like the single
        // ones, a thread of a readable channel included.
        let root = s.append_message(msg(private.id, a, "root")).await.unwrap();
        let (thread, _, _) = s
            .create_thread(private.id, root.id, Some("t"))
            .await
            .unwrap()
            .unwrap();
        let everyone = [a, b, c, 424_242];
        let mut one_by_one = Vec::new();
        let mut spaces = Vec::new();
        for u in everyone {
            let mut chans = s.readable_channels(u).await.unwrap();
            chans.sort_unstable();
            one_by_one.extend(chans.into_iter().map(|ch| (u, ch)));
            spaces.extend(
                s.spaces_of(u)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|sp| (u, sp.id)),
            );
        }
        assert!(one_by_one.contains(&(a, thread.channel)));
        let mut batched = s.readable_channels_of(&everyone).await.unwrap();
        batched.sort_unstable();
        one_by_one.sort_unstable();
        assert_eq!(batched, one_by_one);
        let mut batched = s.spaces_of_users(&everyone).await.unwrap();
        batched.sort_unstable();
        spaces.sort_unstable();
        assert_eq!(batched, spaces);
        assert!(s.readable_channels_of(&[]).await.unwrap().is_empty());

        s.leave_space(space.id, b).await.unwrap();
        assert!(
            !s.can_read(public.id, b).await.unwrap(),
            "leaving revokes reading"
        );
        assert!(s.readable_channels(b).await.unwrap().is_empty());
    })
    .await;
}
crate::both_phases!(spaces_channels_and_reading_rights);

async fn seqs_and_history(phase: flowline_server::Phase) {
    with_storage(phase, |s| async move {
        let a = s.create_user("a", "h").await.unwrap().id;
        let space = s.create_space(a, "g").await.unwrap();
        let ch = s
            .create_channel(space.id, "c", ChannelKind::Public, &[])
            .await
            .unwrap();
        let other = s
            .create_channel(space.id, "d", ChannelKind::Public, &[])
            .await
            .unwrap();
        let mut ids = BTreeSet::new();
        for i in 1..=10 {
            let m = s
                .append_message(msg(ch.id, a, &format!("m{i}")))
                .await
                .unwrap();
            assert_eq!(m.seq, i);
            assert_eq!(m.body, format!("m{i}"));
            assert!(ids.insert(m.id), "message ids are unique");
        }
        assert_eq!(
            s.append_message(msg(other.id, a, "x")).await.unwrap().seq,
            1,
            "seqs are per channel"
        );
        assert!(matches!(
            s.append_message(msg(777_777, a, "x")).await,
            Err(StorageError::NotFound(_))
        ));
        assert_eq!(s.channel(ch.id).await.unwrap().unwrap().last_seq, 10);
        assert_eq!(
            s.last_seqs(&[ch.id, other.id, 999_999]).await.unwrap(),
            vec![(ch.id, 10), (other.id, 1)]
        );

        let seqs = |v: Vec<flowline_protocol::ws::Message>| {
            v.into_iter().map(|m| m.seq).collect::<Vec<_>>()
        };
        assert_eq!(
            seqs(s.messages(ch.id, None, None, 3).await.unwrap()),
            [8, 9, 10]
        );
        assert_eq!(
            seqs(s.messages(ch.id, Some(5), None, 3).await.unwrap()),
            [2, 3, 4]
        );
        assert_eq!(
            seqs(s.messages(ch.id, None, Some(7), 50).await.unwrap()),
            [8, 9, 10]
        );
        assert_eq!(
            seqs(s.messages(ch.id, None, Some(2), 2).await.unwrap()),
            [3, 4]
        );
        assert_eq!(
            seqs(s.messages(ch.id, Some(6), Some(2), 50).await.unwrap()),
            [3, 4, 5]
        );
        assert!(
            s.messages(ch.id, None, Some(10), 50)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            s.messages(ch.id, Some(1), None, 50)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            s.messages(424_242, None, None, 50)
                .await
                .unwrap()
                .is_empty()
        );
        let m = &s.messages(ch.id, None, Some(0), 1).await.unwrap()[0];
        assert_eq!(
            (m.author, m.nonce.as_deref(), m.created_at),
            (a, Some("n"), 1_700_000_000_000)
        );
    })
    .await;
}
crate::both_phases!(seqs_and_history);

async fn concurrent_appends_are_gapless(phase: flowline_server::Phase) {
    with_storage(phase, |s| async move {
        let a = s.create_user("a", "h").await.unwrap().id;
        let space = s.create_space(a, "g").await.unwrap();
        let ch = s
            .create_channel(space.id, "c", ChannelKind::Public, &[])
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..50 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..4 {
                    seqs.push(
                        s.append_message(msg(ch.id, a, &format!("{t}-{i}")))
                            .await
                            .unwrap()
                            .seq,
                    );
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<_>>());
    })
    .await;
}
crate::both_phases!(concurrent_appends_are_gapless);

async fn provision_bulk(phase: flowline_server::Phase) {
    with_storage(phase, |s| async move {
        let req = Provision {
            username_prefix: "u".into(),
            users: 4,
            spaces: vec![ProvisionSpace {
                name: "s".into(),
                members: vec![0, 1, 2, 1],
                channels: vec![
                    ProvisionChannel {
                        name: "pub".into(),
                        members: None,
                    },
                    ProvisionChannel {
                        name: "priv".into(),
                        members: Some(vec![0, 2]),
                    },
                ],
            }],
            dms: vec![(0, 3), (3, 0), (1, 2)],
        };
        let tokens: Vec<[u8; 32]> = (0..4u8).map(|i| [i; 32]).collect();
        let out = s.provision(&req, &tokens).await.unwrap();
        assert_eq!(out.users.len(), 4);
        for (i, id) in out.users.iter().enumerate() {
            let u = s.user_by_token(tokens[i]).await.unwrap().unwrap();
            assert_eq!((u.id, u.username), (*id, format!("u{i}")));
            let (_, hash) = s.user_credentials(&format!("u{i}")).await.unwrap().unwrap();
            assert!(
                hash.is_none(),
                "provisioned users cannot log in with a password"
            );
        }
        let [public, private] = out.spaces[0].channels[..] else {
            panic!()
        };
        let u = &out.users;
        assert!(s.can_read(public, u[1]).await.unwrap());
        assert!(!s.can_read(public, u[3]).await.unwrap());
        assert!(s.can_read(private, u[2]).await.unwrap());
        assert!(!s.can_read(private, u[1]).await.unwrap());
        assert_eq!(out.dms.len(), 3);
        assert_eq!(out.dms[0], out.dms[1], "the same pair is one DM");
        assert!(s.can_read(out.dms[0], u[3]).await.unwrap());
        assert!(!s.can_read(out.dms[0], u[1]).await.unwrap());
        assert_eq!(
            s.space(out.spaces[0].id).await.unwrap().unwrap().owner,
            u[0]
        );
        assert_eq!(s.space_members(out.spaces[0].id).await.unwrap().len(), 3);
        // Names taken: conflict, and nothing half-done.
        let again = s
            .provision(
                &Provision {
                    users: 1,
                    ..Default::default()
                },
                &[[5; 32]],
            )
            .await;
        assert!(
            again.is_ok(),
            "empty prefix u0 differs from prefix u: {again:?}"
        );
        let clash = Provision {
            username_prefix: "u".into(),
            users: 1,
            ..Default::default()
        };
        assert!(matches!(
            s.provision(&clash, &[[9; 32]]).await,
            Err(StorageError::Conflict(_))
        ));
        assert!(s.user_by_token([9; 32]).await.unwrap().is_none());
    })
    .await;
}
crate::both_phases!(provision_bulk);

async fn concurrent_reactions_count_once(phase: flowline_server::Phase) {
    with_storage(phase, |s| async move {
        let a = s.create_user("a", "h").await.unwrap().id;
        let space = s.create_space(a, "guild").await.unwrap();
        let ch = s
            .create_channel(space.id, "general", ChannelKind::Public, &[])
            .await
            .unwrap();
        let m = s.append_message(msg(ch.id, a, "hi")).await.unwrap();
        let adds = (0..16).map(|_| s.react(ch.id, m.id, a, "👍", true));
        let results = futures_util::future::join_all(adds).await;
        let changed = results
            .into_iter()
            .map(|r| r.unwrap().expect("message exists"))
            .filter(|c| c.changed)
            .count();
        assert_eq!(changed, 1);
        let stored = s.messages(ch.id, None, None, 10).await.unwrap();
        assert_eq!(stored[0].reactions.len(), 1);
        assert_eq!(stored[0].reactions[0].count, 1);
        // Removing twice changes the set once.
        let first = s.react(ch.id, m.id, a, "👍", false).await.unwrap().unwrap();
        let second = s.react(ch.id, m.id, a, "👍", false).await.unwrap().unwrap();
        assert_eq!(
            (first.changed, first.count, second.changed),
            (true, 0, false)
        );
        assert!(
            s.messages(ch.id, None, None, 10).await.unwrap()[0]
                .reactions
                .is_empty()
        );
    })
    .await;
}
crate::both_phases!(concurrent_reactions_count_once);

/// A bulk provisioning leaves the planner fresh statistics: before, the first connect
/// storm after it joined users and members by sequential scans (the tables looked empty
/// to the planner), and at 100k users that starved every node's pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_analyzes_what_it_filled() {
    use sqlx::Connection;
    let db = TestDb::new().await;
    let s: Arc<dyn Storage> = Arc::new(db.storage().await);
    let req = Provision {
        username_prefix: "a".into(),
        users: 3,
        spaces: vec![ProvisionSpace {
            name: "s".into(),
            members: vec![0, 1, 2],
            channels: vec![ProvisionChannel {
                name: "priv".into(),
                members: Some(vec![0, 1]),
            }],
        }],
        dms: vec![],
    };
    let tokens: Vec<[u8; 32]> = (0..3u8).map(|i| [i; 32]).collect();
    s.provision(&req, &tokens).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // `reltuples` is what the planner believes; -1 means "never analyzed" (Postgres 14+).
    let rows: Vec<(String, f32)> = sqlx::query_as(
        "SELECT relname::text, reltuples FROM pg_class
         WHERE relname IN ('users', 'tokens', 'spaces', 'space_members', 'channels', 'channel_members')
         ORDER BY relname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("channel_members".into(), 2.0),
            ("channels".into(), 1.0),
            ("space_members".into(), 3.0),
            ("spaces".into(), 1.0),
            ("tokens".into(), 3.0),
            ("users".into(), 3.0),
        ],
        "the planner's row counts after provisioning"
    );
}

/// Appends arriving together are committed together (group commit) and stay exactly what
/// one-by-one appends were: every channel's seqs gapless from 1 in one log, each append
/// answered with its own seq, an append to a missing channel refused alone, and one whose
/// statement fails (an attachment that does not exist) retried alone, failing alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_arriving_together_share_statements() {
    let db = TestDb::new().await;
    let metrics = flowline_server::metrics::Metrics::new("t");
    let s: Arc<dyn Storage> = Arc::new(
        flowline_server::storage::PgStorage::connect(
            &db.url,
            flowline_server::storage::PoolSizes {
                send: 2,
                other: 2,
                acquire_timeout: std::time::Duration::from_secs(30),
            },
            Some(&metrics),
        )
        .await
        .unwrap(),
    );
    let a = s.create_user("a", "h").await.unwrap().id;
    let space = s.create_space(a, "g").await.unwrap();
    let mut channels = Vec::new();
    for name in ["c1", "c2", "c3"] {
        channels.push(
            s.create_channel(space.id, name, ChannelKind::Public, &[])
                .await
                .unwrap()
                .id,
        );
    }
    let bad_attachment = {
        let mut m = msg(channels[0], a, "with a missing file");
        m.attachments.push(flowline_protocol::ws::Attachment {
            id: 987_654,
            filename: "x".into(),
            content_type: "text/plain".into(),
            size: 1,
            sha256: String::new(),
        });
        m
    };
    let mut tasks = Vec::new();
    for i in 0..300usize {
        let s = s.clone();
        let m = match i {
            100 => bad_attachment.clone(),
            200 => msg(999_999, a, "no such channel"),
            _ => msg(channels[i % 3], a, &format!("m{i}")),
        };
        tasks.push(tokio::spawn(async move {
            let r = s.append_message(m).await;
            (i, r)
        }));
    }
    let mut seqs: Vec<Vec<(i64, String)>> = vec![Vec::new(); 3];
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match i {
            100 => assert!(
                matches!(r, Err(StorageError::Database(_))),
                "the append with a missing attachment fails: {r:?}"
            ),
            200 => assert!(matches!(r, Err(StorageError::NotFound("channel"))), "{r:?}"),
            _ => {
                let m = r.unwrap();
                assert_eq!(m.body, format!("m{i}"), "each append gets its own answer");
                seqs[i % 3].push((m.seq, m.body));
            }
        }
    }
    for (k, mut got) in seqs.into_iter().enumerate() {
        got.sort_unstable();
        let n = got.len() as i64;
        assert_eq!(
            got.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>(),
            "channel {k}: gapless"
        );
        // The stored log says the same.
        let stored = s.messages(channels[k], None, Some(0), 1000).await.unwrap();
        let stored: Vec<(i64, String)> = stored.into_iter().map(|m| (m.seq, m.body)).collect();
        assert_eq!(
            stored, got,
            "channel {k}: what was answered is what was stored"
        );
    }
    let rendered = metrics.render();
    let statements: u64 = rendered
        .lines()
        .find(|l| l.starts_with("flowline_db_append_statements_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no append statement count in:\n{rendered}"));
    // 298 appends stored; 300 queued at once over 2 connections share statements (the
    // failing batch is committed by halves: ~2 × log2(its size) statements more).
    assert!(
        (2..=100).contains(&statements),
        "{statements} statements for 298 appends"
    );
}

/// Rechecks of several (channel, user) pairs in one call answer each pair as `can_read`
/// does, in the order asked (Postgres: one query; the node batches its sessions'
/// rechecks into it).
async fn rechecks_in_one_call(phase: flowline_server::Phase) {
    with_storage(phase, |s| async move {
        let a = s.create_user("a", "h").await.unwrap().id;
        let b = s.create_user("b", "h").await.unwrap().id;
        let c = s.create_user("c", "h").await.unwrap().id;
        let space = s.create_space(a, "g").await.unwrap();
        s.join_space(space.id, b).await.unwrap();
        let public = s
            .create_channel(space.id, "general", ChannelKind::Public, &[])
            .await
            .unwrap()
            .id;
        let private = s
            .create_channel(space.id, "staff", ChannelKind::Private, &[a])
            .await
            .unwrap()
            .id;
        let (dm, _) = s.open_dm(b, c).await.unwrap();
        let pairs = [
            (public, a),
            (public, c),
            (private, b),
            (private, a),
            (dm.id, c),
            (dm.id, a),
            (424_242, a),
            (public, b),
        ];
        let got = s.recheck_reads(&pairs).await.unwrap();
        let mut want = Vec::new();
        for &(ch, u) in &pairs {
            want.push(s.can_read(ch, u).await.unwrap());
        }
        assert_eq!(want, [true, false, false, true, true, false, false, true]);
        assert_eq!(got, want);
        assert!(s.recheck_reads(&[]).await.unwrap().is_empty());
    })
    .await;
}
crate::both_phases!(rechecks_in_one_call);
