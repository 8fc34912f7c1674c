//! The chaos crate's error type, and the Toxiproxy status code of every API error.
//!
//! The first group of variants are Toxiproxy's own API errors (`api.go`): their messages
//! and status codes are what existing Toxiproxy clients expect, so keep them verbatim.

use std::io;

/// Everything that can go wrong in the chaos crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request body is not valid JSON or has a field of the wrong type (400).
    #[error("bad request body: {0}")]
    BadRequestBody(String),
    /// A required field is missing (400).
    #[error("missing required field: {0}")]
    MissingField(String),
    /// No proxy with that name (404).
    #[error("proxy not found")]
    ProxyNotFound,
    /// A proxy with that name exists already (409).
    #[error("proxy already exists")]
    ProxyAlreadyExists,
    /// `stream` is neither `upstream` nor `downstream` (400).
    #[error("stream was invalid, can be either upstream or downstream")]
    InvalidStream,
    /// Unknown toxic `type` (400).
    #[error("invalid toxic type")]
    InvalidToxicType,
    /// A toxic with that name exists already on the proxy (409).
    #[error("toxic already exists")]
    ToxicAlreadyExists,
    /// No toxic with that name on the proxy (404).
    #[error("toxic not found")]
    ToxicNotFound,
    /// A listen or upstream address outside 127.0.0.0/8 and ::1 without explicit permission (400).
    #[error("{0} is not a loopback address (non-loopback targets must be allowed explicitly)")]
    NotLoopback(String),
    /// An address that does not resolve (400).
    #[error("cannot resolve address {addr:?}: {source}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The proxy could not bind its listen address (500, as in Toxiproxy).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address as given.
        addr: String,
        /// Why it failed.
        source: io::Error,
    },
    /// Sending a signal to a process failed.
    #[error("cannot signal process {pid}: {source}")]
    Signal {
        /// The process signalled.
        pid: u32,
        /// The errno.
        source: nix::errno::Errno,
    },
    /// A process target has no running process to signal.
    #[error("node {0} has no running process")]
    NoProcess(String),
    /// A process target could not be restarted.
    #[error("cannot restart node {node}: {reason}")]
    Restart {
        /// The node id.
        node: String,
        /// Why, as reported by the restarter.
        reason: String,
    },
    /// A remote Toxiproxy could not be reached or answered garbage.
    #[error("toxiproxy at {url}: {source}")]
    Remote {
        /// The request URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// A remote Toxiproxy refused a request.
    #[error("toxiproxy at {url} answered {status}: {body}")]
    RemoteStatus {
        /// The request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Response body (Toxiproxy's `{"error":..,"status":..}`).
        body: String,
    },
    /// A fault entry of the schedule is invalid.
    #[error(transparent)]
    Fault(#[from] crate::fault::FaultError),
    /// A fault's target glob matches nothing.
    #[error("fault #{index}: target {target:?} matches no {what}")]
    NoTarget {
        /// Position in `[[faults]]`, 1-based.
        index: usize,
        /// The glob as written.
        target: String,
        /// "link" or "node".
        what: &'static str,
    },
    /// Writing events.jsonl failed.
    #[error("cannot write events log {path}: {source}")]
    Events {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// An `ip`, `tc` or `nft` command failed.
    #[error("{command}: {reason}")]
    Kernel {
        /// The command line.
        command: String,
        /// Its error output, or why it could not run.
        reason: String,
    },
    /// A run's network cannot be made or used as asked.
    #[error("network namespaces: {reason}")]
    Network {
        /// Why.
        reason: String,
    },
    /// A link's data-plane processes could not start or apply a change (500).
    #[error("data plane of {proxy}: {reason}")]
    DataPlane {
        /// The proxy.
        proxy: String,
        /// What went wrong.
        reason: String,
    },
    /// Any other I/O error (500).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// The HTTP status Toxiproxy answers for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequestBody(_)
            | Error::MissingField(_)
            | Error::InvalidStream
            | Error::InvalidToxicType
            | Error::NotLoopback(_)
            | Error::Resolve { .. }
            | Error::Fault(_)
            | Error::NoTarget { .. } => 400,
            Error::ProxyNotFound | Error::ToxicNotFound => 404,
            Error::ProxyAlreadyExists | Error::ToxicAlreadyExists => 409,
            _ => 500,
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
