//! The architecture phases Flowline compares (DESIGN.md), shared by the node's
//! `--phase` flag and the scenario's `[cluster] phase`.

use serde::{Deserialize, Serialize};

/// Architecture phase of a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// One node, in-memory storage.
    #[default]
    Single,
    /// One node, Postgres storage (ack after commit).
    Postgres,
    /// Several nodes fanned out through Redis pub/sub.
    Pubsub,
    /// Several nodes with a durable queue (Redis Streams).
    Queue,
}

impl Phase {
    /// Every phase, in the order of DESIGN.md.
    pub const ALL: [Phase; 4] = [Phase::Single, Phase::Postgres, Phase::Pubsub, Phase::Queue];
    /// Every phase's name, in the same order.
    pub const NAMES: [&'static str; 4] = ["single", "postgres", "pubsub", "queue"];

    /// The name as written in scenarios and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Single => "single",
            Phase::Postgres => "postgres",
            Phase::Pubsub => "pubsub",
            Phase::Queue => "queue",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown phase {s:?} (expected single, postgres, pubsub or queue)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_match_serde() {
        for (p, name) in Phase::ALL.into_iter().zip(Phase::NAMES) {
            assert_eq!(p.as_str(), name);
            assert_eq!(name.parse::<Phase>(), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), name);
        }
        assert!(
            "multi"
                .parse::<Phase>()
                .unwrap_err()
                .contains("expected single")
        );
    }
}
