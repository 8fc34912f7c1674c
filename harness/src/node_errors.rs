//! The warnings and errors the run's nodes logged, grouped by cause (summary.json
//! `node_errors`): a run that fails on latency often has its cause in the node logs
//! (storage failures, Postgres pool timeouts), and the report and the final lines say so.
//!
//! Each WARN/ERROR line of `logs/<node>.log` is normalised — ANSI colour codes and the
//! timestamp removed, numbers, ids and durations replaced by `#` — so the same cause
//! logged with different ids or waits counts as one message.

use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;
use std::path::Path;

use flowline_loadgen::aggregate::{NodeErrors, NodeLogMessage};

/// Messages kept in the summary, most frequent first.
pub const TOP: usize = 5;
/// Distinct messages tracked at most (a log of unique lines must not grow memory).
const MAX_DISTINCT: usize = 10_000;
/// Longest normalised message kept, characters.
const MAX_MESSAGE: usize = 300;

/// Counts of one normalised message.
#[derive(Default)]
struct Group {
    level: &'static str,
    count: u64,
    nodes: BTreeSet<String>,
    example: String,
    /// Order of first appearance, to break ties in count.
    first: usize,
}

/// Grouping of WARN/ERROR lines from several nodes' logs.
#[derive(Default)]
pub struct Tally {
    groups: HashMap<(&'static str, String), Group>,
    warnings: u64,
    errors: u64,
}

impl Tally {
    /// Count one log line of `node` (lines other than WARN/ERROR are ignored).
    pub fn line(&mut self, node: &str, raw: &str) {
        let Some((level, rest)) = split_level(&strip_ansi(raw)) else {
            return;
        };
        match level {
            "ERROR" => self.errors += 1,
            _ => self.warnings += 1,
        }
        let message = normalise(&rest);
        let next = self.groups.len();
        let key = (level, message);
        if !self.groups.contains_key(&key) && next >= MAX_DISTINCT {
            return;
        }
        let g = self.groups.entry(key).or_insert_with(|| Group {
            level,
            example: truncate(rest.trim(), MAX_MESSAGE),
            first: next,
            ..Group::default()
        });
        g.count += 1;
        if !g.nodes.contains(node) {
            g.nodes.insert(node.to_string());
        }
    }

    /// Count every line of a node's log file; a missing file counts nothing.
    pub fn file(&mut self, node: &str, path: &Path) {
        let Ok(f) = std::fs::File::open(path) else {
            return;
        };
        let mut r = std::io::BufReader::new(f);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => self.line(node, &String::from_utf8_lossy(&buf)),
            }
        }
    }

    /// The summary's `node_errors`: `None` if no node logged a warning or error.
    pub fn finish(self, top: usize) -> Option<NodeErrors> {
        if self.warnings + self.errors == 0 {
            return None;
        }
        let distinct = self.groups.len() as u64;
        let mut groups: Vec<(String, Group)> =
            self.groups.into_iter().map(|((_, m), g)| (m, g)).collect();
        groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.1.first.cmp(&b.1.first)));
        Some(NodeErrors {
            warnings: self.warnings,
            errors: self.errors,
            distinct,
            top: groups
                .into_iter()
                .take(top)
                .map(|(message, g)| NodeLogMessage {
                    level: g.level.to_string(),
                    message,
                    count: g.count,
                    nodes: g.nodes.into_iter().collect(),
                    example: g.example,
                })
                .collect(),
        })
    }
}

/// Scan the logs of the named nodes in `log_dir` (`<node>.log`).
pub fn scan<'a>(log_dir: &Path, nodes: impl IntoIterator<Item = &'a str>) -> Option<NodeErrors> {
    let mut t = Tally::default();
    for n in nodes {
        t.file(n, &log_dir.join(format!("{n}.log")));
    }
    t.finish(TOP)
}

/// Remove ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The level of a tracing line (`[timestamp] LEVEL rest`) if WARN or ERROR, and the rest.
fn split_level(line: &str) -> Option<(&'static str, String)> {
    // The level is the first or second word (after the timestamp, if any).
    let mut rest = line.trim_start();
    for _ in 0..2 {
        let (word, after) = match rest.find(char::is_whitespace) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let level = match word {
            "WARN" => "WARN",
            "ERROR" => "ERROR",
            _ => {
                rest = after.trim_start();
                continue;
            }
        };
        return Some((level, after.trim().to_string()));
    }
    None
}

/// Replace what differs between lines of one cause by `#`: numbers (with their unit, for
/// durations and sizes), dotted or coloned number groups (times, addresses) and long hex
/// ids (UUIDs); whitespace collapsed.
pub fn normalise(msg: &str) -> String {
    let chars: Vec<char> = msg.chars().collect();
    let mut out = String::with_capacity(msg.len());
    let mut i = 0;
    let word_start = |i: usize| i == 0 || !chars[i - 1].is_alphanumeric();
    while i < chars.len() {
        let c = chars[i];
        // A hex id (UUID, trace id): 8+ hex digits and dashes, with a digit in it.
        if c.is_ascii_hexdigit() && word_start(i) {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_hexdigit() || chars[j] == '-') {
                j += 1;
            }
            let ends_word = j == chars.len() || !chars[j].is_alphanumeric();
            if j - i >= 8 && ends_word && chars[i..j].iter().any(char::is_ascii_digit) {
                out.push('#');
                i = j;
                continue;
            }
        }
        if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_ascii_digit()
                    || (matches!(chars[j], '.' | ':' | '_')
                        && chars.get(j + 1).is_some_and(char::is_ascii_digit)))
            {
                j += 1;
            }
            // A unit right after the number (5.001s, 12ms, 3µs, 40KiB) goes with it.
            let mut k = j;
            while k < chars.len() && (chars[k].is_alphabetic()) {
                k += 1;
            }
            let unit: String = chars[j..k].iter().collect();
            if matches!(
                unit.as_str(),
                "ns" | "us" | "µs" | "ms" | "s" | "m" | "h" | "B" | "KiB" | "MiB" | "GiB"
            ) {
                j = k;
            }
            out.push('#');
            i = j;
            continue;
        }
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    truncate(out.trim(), MAX_MESSAGE)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_cause_with_other_ids_and_durations_groups_together() {
        let mut t = Tally::default();
        t.line(
            "node1",
            "2026-11-28T23:00:00.123456Z  WARN session{user=2414 conn=7}: flowline_server::presence: cannot announce presence: storage failed error=database: pool timed out while waiting for an open connection after 5.001s",
        );
        t.line(
            "node2",
            "\x1b[2m2026-11-28T23:00:07.9Z\x1b[0m \x1b[33m WARN\x1b[0m session{user=12 conn=1093}: flowline_server::presence: cannot announce presence: storage failed error=database: pool timed out while waiting for an open connection after 812ms",
        );
        t.line(
            "node1",
            "2026-11-28T23:00:01.000001Z ERROR flowline_server::session: storage failed during a session id=3f2b8c1e-9d4a-4b7e-8f00-12ab34cd56ef",
        );
        t.line(
            "node1",
            "2026-11-28T23:00:01.5Z  INFO flowline_server::node: listening on 127.0.0.1:4000",
        );
        t.line(
            "node1",
            "2026-11-28T23:00:02Z  WARN flowline_server::hub: slow",
        );
        t.line(
            "node1",
            "2026-11-28T23:00:03Z  WARN flowline_server::hub: slow",
        );
        t.line("node1", "2026-11-28T23:00:03Z ERROR flowline_server::session: storage failed during a session id=0b7a6c1e-9d4a-4b7e-8f00-12ab34cd56ef");
        t.line("node3", "2026-11-28T23:00:03Z  WARN session{user=9 conn=31}: flowline_server::presence: cannot announce presence: storage failed error=database: pool timed out while waiting for an open connection after 2s");
        let n = t.finish(2).unwrap();
        assert_eq!((n.warnings, n.errors, n.distinct), (5, 2, 3));
        assert_eq!(n.top.len(), 2);
        let first = &n.top[0];
        assert_eq!(first.count, 3);
        assert_eq!(first.level, "WARN");
        assert_eq!(
            first.message,
            "session{user=# conn=#}: flowline_server::presence: cannot announce presence: \
             storage failed error=database: pool timed out while waiting for an open \
             connection after #"
        );
        assert_eq!(first.nodes, ["node1", "node2", "node3"]);
        assert!(
            first.example.starts_with("session{user=2414 conn=7}"),
            "{}",
            first.example
        );
        // Two each: the one seen first comes first.
        assert_eq!(n.top[1].count, 2);
        assert_eq!(n.top[1].level, "ERROR");
        assert_eq!(
            n.top[1].message,
            "flowline_server::session: storage failed during a session id=#"
        );
    }

    #[test]
    fn a_clean_log_has_nothing() {
        let mut t = Tally::default();
        t.line(
            "node1",
            "2026-11-28T23:00:01.5Z  INFO flowline_server: listening",
        );
        t.line("node1", "");
        t.line("node1", "WARNING is not a level word");
        assert!(t.finish(TOP).is_none());
    }

    #[test]
    fn ansi_codes_are_stripped_and_numbers_normalised() {
        assert_eq!(strip_ansi("\x1b[33m WARN\x1b[0m x"), " WARN x");
        assert_eq!(normalise("took 12ms at 10.0.0.1:5432"), "took # at #");
        assert_eq!(normalise("node2  down"), "node# down");
        assert_eq!(normalise("http2 version"), "http# version");
        assert_eq!(normalise("deadbeef but not cafe"), "deadbeef but not cafe");
    }
}
