//! Scenario files: raw TOML structs (`deny_unknown_fields`) → one validation pass, a
//! function per table, into the typed [`Scenario`]; command-line [`Overrides`] merged in
//! one place ([`Scenario::apply`]); and the way back to TOML with the seed filled in
//! ([`Scenario::to_toml`]).
//!
//! ```text
//! text ──toml+serde──▶ raw::RawScenario ──validate::validate()──▶ model::Scenario
//!   │ (error: line/col)          ▲                                   │
//!   └─schema::unknown_keys:       └──────── apply(Overrides) ─────────┘
//!     every unknown key with      (edits the raw form, validates again)
//!     line/col
//! ```
//!
//! | file | holds |
//! |---|---|
//! | `raw.rs` | the file as TOML has it, one struct per table |
//! | `schema.rs` | the keys of each table; the walk listing every unknown key |
//! | `validate/` | one file per table: defaults, checks, the typed value |
//! | `model.rs` | [`Scenario`] and its run, cluster, population and load types |
//! | `persona.rs`, `target.rs`, `dist.rs`, `isolation.rs` | personas, the generic WebSocket target, distributions, network isolation |
//!
//! `docs/scenarios.md` documents every key.

mod dist;
mod isolation;
mod model;
mod persona;
mod raw;
mod schema;
mod target;
mod validate;

use std::path::Path;

pub use crate::error::{ScenarioError, UnknownKey};
pub use dist::Dist;
/// Architecture phase (shared with the node's `--phase`).
pub use flowline_protocol::Phase;
pub use isolation::Isolation;
pub use model::{Cluster, External, Load, LoadModel, Overrides, Population, Scenario, Stage};
pub use persona::{HttpKind, Persona};
pub use target::{Expect, PLACEHOLDERS, TargetKind, TimeUnit, WsTarget, template_names};

use raw::RawScenario;
use schema::{line_col, unknown_keys};

impl Scenario {
    /// Read and validate a scenario file.
    pub fn from_path(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&path.display().to_string(), &text)
    }

    /// Parse and validate scenario text; `name` is used in error messages.
    pub fn parse(name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let unknown = unknown_keys(text);
        match toml::from_str::<RawScenario>(text) {
            Ok(raw) if unknown.is_empty() => validate::validate(raw, name),
            Ok(_) => Err(ScenarioError::Parse {
                source_name: name.into(),
                line: unknown[0].line,
                column: unknown[0].column,
                message: "unknown keys".into(),
                unknown_keys: unknown,
            }),
            Err(e) => {
                // Point at the first unknown key when there is one: serde may have
                // stopped at a later one.
                let (line, column) = match unknown.first() {
                    Some(u) => (u.line, u.column),
                    None => e.span().map_or((0, 0), |s| line_col(text, s.start)),
                };
                Err(ScenarioError::Parse {
                    source_name: name.into(),
                    line,
                    column,
                    message: e.message().trim().to_string(),
                    unknown_keys: unknown,
                })
            }
        }
    }

    /// A copy with the overrides applied, validated again.
    pub fn apply(&self, o: &Overrides) -> Result<Scenario, ScenarioError> {
        let mut raw = self.raw.clone();
        if let Some(seed) = o.seed {
            raw.run.seed = Some(seed);
        }
        if let Some(phase) = o.phase {
            raw.cluster.phase = Some(phase);
        }
        if let Some(nodes) = o.nodes {
            raw.cluster.nodes = Some(nodes);
        }
        if let Some(users) = o.users {
            // Closed-model stage targets are user counts out of the population: keep the
            // ramp's shape by scaling them with the population, so `--users 100` on a
            // scenario that ramps to 1,000 ramps to 100.
            let before = raw.population.users;
            if before > 0 && users != before {
                for stage in &mut raw.load.stages {
                    if let Some(t) = stage.target.as_mut() {
                        let scaled = (u64::from(*t) * u64::from(users)).div_ceil(u64::from(before));
                        *t = u32::try_from(scaled).unwrap_or(u32::MAX).min(users);
                    }
                }
            }
            raw.population.users = users;
        }
        if let Some(d) = o.duration {
            raw.run.duration = d;
        }
        if let Some(i) = o.isolation {
            raw.cluster.isolation = Some(i);
        }
        validate::validate(raw, &self.name)
    }

    /// The scenario as TOML, seed included; parsing it gives the same scenario.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(&self.raw).unwrap_or_else(|e| {
            // Every raw field is a plain TOML value, so this cannot happen; keep the run
            // going with a comment rather than aborting at the end.
            format!("# could not serialise the scenario: {e}\n")
        });
        format!(
            "# Scenario as run (seed filled in); `flowline run` this file to replay it.\n{body}"
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::raw::RawScenario;
    use super::schema::unknown_keys;
    use super::*;

    pub(crate) const FULL: &str = r#"
[run]
name = "full"
description = "every key"
duration = "10s"
warmup = "2s"
drain = "1s"
seed = 42

[cluster]
phase = "pubsub"
nodes = 2
heartbeat = "40s"

[population]
users = 300
spaces = 3
channels_per_space = 4
members = { dist = "zipf", min = 3, max = 60, exponent = 1.2 }
dm_share = 0.1

[[personas]]
name = "chatty"
weight = 3
messages_per_minute = 6
body_bytes = { dist = "uniform", min = 20, max = 400 }
typing = true
reactions_per_minute = 1
thread_reply_share = 0.1
history_per_minute = 0.5
presence_per_minute = 0.2
uploads_per_minute = 0
reconnect_every = "30s"

[[personas]]
name = "lurker"
weight = 1
messages_per_minute = 0.2

[load]
model = "closed"
connect_rate = 1000
stages = [{ duration = "2s", target = 300 }]

[[thresholds]]
expr = "delivery.p99 < 250ms"

[[thresholds]]
expr = "lost == 0"

[[faults]]
at = "3s"
duration = "2s"
kind = "latency"
target = "client-node*"
latency = "50ms"
"#;

    #[test]
    fn shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        for name in ["quickstart", "capacity-10k", "fanout-limit"] {
            let s = Scenario::from_path(&dir.join(format!("{name}.toml")))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.name, name);
            assert_eq!(s.cluster.phase, Phase::Single);
        }
        let q = Scenario::from_path(&dir.join("quickstart.toml")).unwrap();
        assert!(q.total_time() < Duration::from_secs(60));
        assert_eq!(q.faults[0].target, "client-node*");
    }

    #[test]
    fn new_shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let ws = Scenario::from_path(&dir.join("ws-broadcast.toml")).unwrap();
        let t = ws.target.as_ref().expect("a websocket target");
        assert_eq!((t.expect, t.room_size), (Expect::Room, 50));
        assert_eq!(t.headers, vec![("X-Load-Test".into(), "flowline".into())]);
        assert!(ws.summary().contains("websocket target"));
        let back = Scenario::parse("back", &ws.to_toml()).unwrap();
        assert_eq!(back, ws);
        let bench = Scenario::from_path(&dir.join("ws-broadcast-10k.toml")).unwrap();
        assert_eq!(bench.population.users, 10_000);
        assert!(bench.target.is_some());
        let login = Scenario::from_path(&dir.join("login-storm.toml")).unwrap();
        let kinds: Vec<_> = login.personas.iter().filter_map(|p| p.http).collect();
        assert_eq!(
            kinds,
            [HttpKind::Login, HttpKind::History, HttpKind::Upload]
        );
    }

    #[test]
    fn bot_and_flood_personas_parse_and_bad_ones_are_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let s = Scenario::from_path(&dir.join("bots-and-humans.toml")).unwrap();
        let kinds: Vec<_> = s.personas.iter().map(|p| p.http).collect();
        assert_eq!(kinds, [None, Some(HttpKind::Bot), Some(HttpKind::Flood)]);
        assert_eq!(s.personas[1].retry_share, 0.2);
        assert_eq!(Scenario::parse("back", &s.to_toml()).unwrap(), s);
        let with = |persona: &str| {
            Scenario::parse(
                "t.toml",
                &format!(
                    "[run]\nname = \"x\"\nduration = \"1s\"\n[population]\nusers = 4\n\
                     [[personas]]\nname = \"p\"\n{persona}"
                ),
            )
        };
        // A bot without retry_share retries one post in ten.
        let bot = with("http = \"bot\"\n").unwrap();
        assert_eq!(bot.personas[0].retry_share, 0.1);
        assert_eq!(
            with("http = \"flood\"\n").unwrap().personas[0].retry_share,
            0.0
        );
        for (persona, needle) in [
            (
                "http = \"bots\"\n",
                "unknown variant `bots`, expected one of",
            ),
            ("http = \"bots\"\n", "`bot`, `flood`"),
            ("retry_share = 0.5\n", "retry_share needs http = \"bot\""),
            (
                "http = \"flood\"\nretry_share = 0.5\n",
                "retry_share needs http = \"bot\"",
            ),
            (
                "http = \"bot\"\nretry_share = 1.5\n",
                "retry_share must be within 0..=1",
            ),
            (
                "http = \"flood\"\nrequests_per_minute = 0\n",
                "http = \"flood\" needs requests_per_minute > 0",
            ),
            (
                "requests_per_minute = 5\n",
                "requests_per_minute needs http = \"login\"|\"history\"|\"upload\"|\"bot\"|\"flood\"",
            ),
        ] {
            let err = with(persona).unwrap_err().to_string();
            assert!(err.contains(needle), "{persona}: {err}");
        }
    }

    #[test]
    fn websocket_target_problems_are_reported() {
        let text = r#"
[run]
name = "x"
duration = "1s"
[target]
kind = "websocket"
urls = ["http://nope"]
message = '{{"id":{msg_idd}}}'
expect = "room"
match_id = "id"
bogus = 1
[population]
users = 2
"#;
        let err = Scenario::parse("t.toml", text).unwrap_err().to_string();
        assert!(err.contains("target.bogus"), "{err}");
        let text = text.replace("bogus = 1\n", "");
        let err = Scenario::parse("t.toml", &text).unwrap_err().to_string();
        for needle in [
            "not a ws:// URL",
            "unknown placeholder {msg_idd}",
            "not a JSON pointer",
            "must carry {msg_id}",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
        let no_msg = text.replace("message = '{{\"id\":{msg_idd}}}'\n", "");
        let err = Scenario::parse("t.toml", &no_msg).unwrap_err().to_string();
        assert!(err.contains("target.message"), "{err}");
    }

    #[test]
    fn full_example_parses() {
        let s = Scenario::parse("full.toml", FULL).unwrap();
        assert_eq!(s.seed, 42);
        assert_eq!(s.cluster.phase, Phase::Pubsub);
        assert_eq!(s.cluster.heartbeat, Some(Duration::from_secs(40)));
        assert_eq!(s.personas.len(), 2);
        assert_eq!(s.personas[0].reconnect_every, Some(Duration::from_secs(30)));
        assert_eq!(s.thresholds.len(), 2);
        assert_eq!(s.faults.len(), 1);
        assert!(s.summary().contains("300 users"));
    }

    #[test]
    fn heartbeat_out_of_range_or_for_an_external_cluster_is_refused() {
        let base = "[run]\nname = \"x\"\nduration = \"1s\"\n[population]\nusers = 1\n[cluster]\n";
        for (cluster, want) in [
            (
                "heartbeat = \"50ms\"\n",
                "cluster.heartbeat must be between 100ms and 10m, got 50ms",
            ),
            (
                "heartbeat = \"11m\"\n",
                "cluster.heartbeat must be between 100ms and 10m, got 11m",
            ),
            (
                "heartbeat = \"20s\"\nhttp = [\"http://127.0.0.1:1\"]\n",
                "an external cluster (cluster.http) keeps its own",
            ),
        ] {
            let err = Scenario::parse("hb.toml", &format!("{base}{cluster}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{cluster}: {err}");
        }
        let ok = Scenario::parse("hb.toml", &format!("{base}heartbeat = \"41250ms\"\n")).unwrap();
        assert_eq!(ok.cluster.heartbeat, Some(Duration::from_millis(41_250)));
        let again = Scenario::parse("again.toml", &ok.to_toml()).unwrap();
        assert_eq!(again.cluster.heartbeat, ok.cluster.heartbeat);
    }

    #[test]
    fn schema_matches_raw_structs() {
        // Every key of the full example is known to the schema walk...
        assert_eq!(unknown_keys(FULL), vec![]);
        // ...and the schema accepts nothing serde refuses: an extra key in each table is
        // reported by both.
        for (table, line) in [
            ("[run]", "name = \"x\"\nduration = \"1s\"\nbogus = 1\n"),
            ("[population]", "users = 1\nbogus = 1\n"),
        ] {
            let text = format!(
                "{table}\n{line}\n{}",
                if table == "[run]" {
                    "[population]\nusers = 1\n"
                } else {
                    "[run]\nname = \"x\"\nduration = \"1s\"\n"
                }
            );
            assert!(toml::from_str::<RawScenario>(&text).is_err());
            assert_eq!(unknown_keys(&text).len(), 1, "{text}");
        }
    }

    #[test]
    fn unknown_keys_are_all_listed_with_positions() {
        let text = "[run]\nname = \"x\"\nduration = \"1s\"\nsed = 4\n\n[population]\nusers = 5\n\n[[personas]]\nname = \"p\"\nmesages_per_minute = 3\n";
        let err = Scenario::parse("t.toml", text).unwrap_err();
        match &err {
            ScenarioError::Parse {
                unknown_keys,
                line,
                column,
                ..
            } => {
                let keys: Vec<_> = unknown_keys.iter().map(|u| u.key.as_str()).collect();
                assert_eq!(keys, ["run.sed", "personas.mesages_per_minute"]);
                assert_eq!((unknown_keys[0].line, unknown_keys[0].column), (4, 1));
                assert_eq!((unknown_keys[1].line, unknown_keys[1].column), (11, 1));
                assert_eq!((*line, *column), (4, 1));
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("t.toml:4:1"), "{msg}");
        assert!(msg.contains("personas.mesages_per_minute"), "{msg}");
    }

    #[test]
    fn type_errors_carry_line_and_column() {
        let text = "[run]\nname = \"x\"\nduration = 5\n[population]\nusers = 1\n";
        let err = Scenario::parse("t.toml", text).unwrap_err();
        match err {
            ScenarioError::Parse { line, column, .. } => assert_eq!((line, column), (3, 12)),
            other => panic!("{other:?}"),
        }
        let text = "[run]\nname = \"x\"\nduration = \"1s\"\n[cluster]\nphase = \"solo\"\n[population]\nusers = 1\n";
        let err = Scenario::parse("t.toml", text).unwrap_err().to_string();
        assert!(err.contains(":5:9"), "{err}");
        assert!(err.contains("solo"), "{err}");
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let text = "[run]\nname = \"x\"\nduration = \"0s\"\n[population]\nusers = 10\ndm_share = 2.0\n[load]\nmodel = \"open\"\n[[thresholds]]\nexpr = \"delivery.p99 <\"\n[[faults]]\nat = \"1s\"\nkind = \"down\"\ntarget = \"x\"\nlatency = \"1s\"\n";
        let err = Scenario::parse("t.toml", text).unwrap_err();
        let ScenarioError::Invalid { problems, .. } = &err else {
            panic!("{err:?}")
        };
        let all = problems.join("\n");
        for needle in [
            "run.duration",
            "dm_share",
            "open model needs",
            "thresholds[1]",
            "`latency` does not apply",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }

    #[test]
    fn overrides_and_round_trip() {
        let s = Scenario::parse("full.toml", FULL).unwrap();
        let o = Overrides {
            seed: Some(7),
            phase: Some(Phase::Queue),
            nodes: Some(3),
            users: Some(500),
            duration: Some(Duration::from_secs(3)),
            isolation: None,
        };
        let s2 = s.apply(&o).unwrap();
        assert_eq!(
            (
                s2.seed,
                s2.cluster.phase,
                s2.cluster.nodes,
                s2.population.users
            ),
            (7, Phase::Queue, 3, 500)
        );
        assert_eq!(s2.duration, Duration::from_secs(3));
        let back = Scenario::parse("back.toml", &s2.to_toml()).unwrap();
        assert_eq!(back, s2);
    }

    #[test]
    fn users_override_scales_closed_stage_targets() {
        let text = include_str!("../../../scenarios/quickstart.toml");
        let s = Scenario::parse("quickstart.toml", text).unwrap();
        let LoadModel::Closed { stages } = &s.load.model else {
            panic!("quickstart uses the closed model");
        };
        let before: Vec<f64> = stages.iter().map(|st| st.value).collect();
        let small = s
            .apply(&Overrides {
                users: Some(100),
                ..Overrides::default()
            })
            .unwrap();
        let LoadModel::Closed { stages } = &small.load.model else {
            panic!("still closed");
        };
        let after: Vec<f64> = stages.iter().map(|st| st.value).collect();
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            let expected = (b * 100.0 / f64::from(s.population.users))
                .ceil()
                .min(100.0);
            assert_eq!(*a, expected, "before {before:?} after {after:?}");
        }
        assert!(after.iter().all(|&a| a <= 100.0));
        assert!(after.iter().any(|&a| a > 0.0), "{after:?}");
    }

    #[test]
    fn missing_seed_is_filled_in_and_written_back() {
        let text = "[run]\nname = \"x\"\nduration = \"1s\"\n[population]\nusers = 3\n";
        let s = Scenario::parse("t", text).unwrap();
        let back = Scenario::parse("t", &s.to_toml()).unwrap();
        assert_eq!(back.seed, s.seed);
        assert!(s.to_toml().contains(&format!("seed = {}", s.seed)));
    }

    #[test]
    fn dist_sampling_stays_in_range() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let z = Dist::Zipf {
            min: 2.0,
            max: 500.0,
            exponent: 1.1,
        };
        let xs: Vec<f64> = (0..2000).map(|_| z.sample(&mut rng)).collect();
        assert!(xs.iter().all(|&x| (2.0..=500.0).contains(&x)));
        let mut sorted = xs.clone();
        sorted.sort_by(f64::total_cmp);
        assert!(
            sorted[1000] < 20.0,
            "zipf should favour small values: median {}",
            sorted[1000]
        );
        assert!(
            sorted[1999] > 100.0,
            "zipf should have a heavy tail: max {}",
            sorted[1999]
        );
        let u = Dist::Uniform { min: 5.0, max: 6.0 };
        assert!((0..100).all(|_| (5.0..=6.0).contains(&u.sample(&mut rng))));
    }
}
