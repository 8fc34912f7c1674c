//! `[cluster] isolation`: how a run's hosts are separated on the network. A leaf: the raw
//! file form and the typed model both use it.

/// How a run's hosts are separated on the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Every process on the machine's own network (loopback): the default.
    #[default]
    None,
    /// Every node, service and worker in a network namespace of its own, on a bridge the
    /// run creates (needs root); kernel faults act between them.
    Netns,
}

impl Isolation {
    /// The name as written in scenarios and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Netns => "netns",
        }
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Isolation::None),
            "netns" => Ok(Isolation::Netns),
            other => Err(format!(
                "unknown isolation {other:?} (expected none or netns)"
            )),
        }
    }
}
