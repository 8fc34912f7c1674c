//! The keys each table of the scenario format accepts, and the walk that lists *every*
//! unknown key of a file with its line and column (serde stops at the first).

use crate::error::UnknownKey;

/// Keys each table accepts, for listing *every* unknown key (serde stops at the first).
/// Kept in step with the raw structs (`raw.rs`); `schema_matches_raw_structs` tests that
/// they agree.
fn schema(path: &str) -> Option<&'static [&'static str]> {
    Some(match path {
        "" => &[
            "run",
            "cluster",
            "population",
            "personas",
            "load",
            "thresholds",
            "faults",
            "target",
        ],
        "target" => &[
            "kind",
            "urls",
            "headers",
            "subprotocol",
            "hello",
            "message",
            "expect",
            "room",
            "room_size",
            "join_grace",
            "match_id",
            "match_time",
            "time_unit",
            "match_regex",
        ],
        // Header names are free-form.
        "target.headers" => return None,
        "run" => &["name", "description", "duration", "warmup", "drain", "seed"],
        "cluster" => &[
            "phase",
            "nodes",
            "http",
            "ws",
            "admin_secret",
            "isolation",
            "heartbeat",
        ],
        "population" => &[
            "users",
            "spaces",
            "channels_per_space",
            "members",
            "dm_share",
        ],
        "population.members" | "personas.body_bytes" => {
            &["dist", "value", "min", "max", "exponent"]
        }
        "personas" => &[
            "name",
            "weight",
            "messages_per_minute",
            "body_bytes",
            "typing",
            "reactions_per_minute",
            "thread_reply_share",
            "history_per_minute",
            "presence_per_minute",
            "uploads_per_minute",
            "reconnect_every",
            "http",
            "requests_per_minute",
            "retry_share",
        ],
        "load" => &["model", "connect_rate", "stages"],
        "load.stages" => &["duration", "target", "rate"],
        "thresholds" => &["expr"],
        "faults" => &[
            "at",
            "duration",
            "kind",
            "target",
            "label",
            "stream",
            "toxicity",
            "latency",
            "jitter",
            "rate",
            "timeout",
            "delay",
            "average_size",
            "size_variation",
            "bytes",
            "restart_after",
            "allow_non_loopback",
            // Kernel faults between hosts (isolated runs).
            "peer",
            "direction",
            "percent",
            // frame toxics
            "nth",
            "every",
            "match",
            "after",
            "offset",
            "xor",
        ],
        _ => return None,
    })
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub(super) fn unknown_keys(text: &str) -> Vec<UnknownKey> {
    use toml::de::{DeTable, DeValue};
    fn walk(text: &str, path: &str, table: &DeTable<'_>, out: &mut Vec<UnknownKey>) {
        let Some(known) = schema(path) else { return };
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            let child = if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            };
            if !known.contains(&key) {
                let (line, column) = line_col(text, k.span().start);
                out.push(UnknownKey {
                    key: child,
                    line,
                    column,
                });
                continue;
            }
            match v.get_ref() {
                DeValue::Table(t) => walk(text, &child, t, out),
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let DeValue::Table(t) = item.get_ref() {
                            walk(text, &child, t, out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(root) = DeTable::parse(text) {
        walk(text, "", root.get_ref(), &mut out);
    }
    out.sort_by_key(|u| (u.line, u.column));
    out
}
