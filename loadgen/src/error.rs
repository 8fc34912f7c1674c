//! Error types of the load generator library: scenario files ([`ScenarioError`], with
//! every [`UnknownKey`] listed) and everything else ([`LoadgenError`]).

use serde::Serialize;

/// A key that no table of the scenario format knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownKey {
    /// Dotted path, e.g. `personas.mesages_per_minute`.
    pub key: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// A scenario file could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type, or unknown keys.
    #[error(
        "{source_name}:{line}:{column}: {message}{}",
        list_unknown(unknown_keys)
    )]
    Parse {
        /// File name or label for messages.
        source_name: String,
        /// 1-based line of the first problem (0 when unknown).
        line: usize,
        /// 1-based column of the first problem (0 when unknown).
        column: usize,
        /// What the TOML/serde layer said.
        message: String,
        /// Every key no table knows, with its position.
        unknown_keys: Vec<UnknownKey>,
    },
    /// Well-formed, but the values do not make sense together.
    #[error("{source_name}: invalid scenario:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// File name or label for messages.
        source_name: String,
        /// Every problem found.
        problems: Vec<String>,
    },
}

fn list_unknown(keys: &[UnknownKey]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    let list: Vec<String> = keys
        .iter()
        .map(|k| format!("{} (line {}, column {})", k.key, k.line, k.column))
        .collect();
    format!("\n  unknown keys: {}", list.join(", "))
}

/// Errors of provisioning, worker I/O and aggregation.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The admin API answered with an error or could not be reached.
    #[error("provisioning through {url} failed: {message}")]
    Provision {
        /// The URL called.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// An HTTP client error.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document could not be (de)serialised.
    #[error("{what}: {source}")]
    Json {
        /// What was being read or written.
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A histogram could not be encoded or decoded.
    #[error("histogram: {0}")]
    Histogram(String),
    /// A worker line was malformed.
    #[error("worker {worker}: {message}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// What was wrong.
        message: String,
    },
    /// A plan/shard request that cannot be satisfied.
    #[error("{0}")]
    Invalid(String),
    /// The coordinator could not be reached, refused this worker, or went away.
    #[error("coordinator {addr}: {message}")]
    Coordinator {
        /// Its address (`--coordinator`).
        addr: String,
        /// What happened.
        message: String,
    },
}

/// Result alias of the library.
pub type Result<T, E = LoadgenError> = std::result::Result<T, E>;

impl LoadgenError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LoadgenError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        LoadgenError::Json {
            what: what.into(),
            source,
        }
    }
}
