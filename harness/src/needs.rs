//! Which services (Postgres, Redis) a run's phase needs: DESIGN.md's table, asked by the
//! topology check, the cluster start and isolation.

use anyhow::bail;

/// Which services a run needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Postgres (phases `postgres`, `pubsub`, `queue`).
    pub postgres: bool,
    /// Redis (phases `pubsub`, `queue`).
    pub redis: bool,
}

impl Needs {
    /// What a phase needs (DESIGN.md's table); an unknown phase is an error.
    pub fn for_phase(phase: &str) -> anyhow::Result<Self> {
        Ok(match phase {
            "single" => Self::default(),
            "postgres" => Self {
                postgres: true,
                redis: false,
            },
            "pubsub" | "queue" => Self {
                postgres: true,
                redis: true,
            },
            other => bail!("unknown phase {other:?} (expected single, postgres, pubsub or queue)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_map_to_needs() {
        assert_eq!(Needs::for_phase("single").unwrap(), Needs::default());
        assert!(Needs::for_phase("postgres").unwrap().postgres);
        assert!(!Needs::for_phase("postgres").unwrap().redis);
        assert!(Needs::for_phase("queue").unwrap().redis);
        assert!(
            Needs::for_phase("mongo")
                .unwrap_err()
                .to_string()
                .contains("unknown phase")
        );
    }
}
