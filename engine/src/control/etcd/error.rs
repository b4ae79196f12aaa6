//! [`EtcdError`]: everything the etcd client can fail with.

use std::io;
use std::path::PathBuf;

/// gRPC status code `NotFound` (e.g. "etcdserver: requested lease not found").
pub const GRPC_NOT_FOUND: i32 = 5;
/// gRPC status code `Unauthenticated` (e.g. "etcdserver: invalid auth token").
pub const GRPC_UNAUTHENTICATED: i32 = 16;

/// An error of the etcd client, naming the endpoint and the operation where there is one
/// (`etcd at http://10.0.0.1:2379: range /coreos.com/network/subnets: connection refused`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// The [`EtcdConfig`](super::EtcdConfig) cannot work (no endpoint, bad URL).
    #[error("etcd client configuration: {0}")]
    Config(String),
    /// A TLS file (CA, certificate, key) cannot be read or parsed.
    #[error("etcd client: cannot use {what} {path}: {detail}")]
    TlsFile {
        /// Which file it is ("CA file", "certificate file", "key file").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why it cannot be used.
        detail: String,
    },
    /// The endpoint could not be reached or the connection broke (refused, timed out, TLS
    /// handshake failed, reset). The client fails over to the next endpoint on this error.
    #[error("etcd at {endpoint}: {operation}: {source}")]
    Transport {
        /// The endpoint URL.
        endpoint: String,
        /// What was being done (`range /coreos.com/network/subnets`).
        operation: String,
        /// The HTTP client's error.
        #[source]
        source: ureq::Error,
    },
    /// Reading the watch stream failed (the connection dropped or stalled): watch again.
    #[error("etcd at {endpoint}: {operation}: {source}; watch again")]
    StreamIo {
        /// The endpoint URL.
        endpoint: String,
        /// The watch (`watch /coreos.com/network/subnets`).
        operation: String,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// The watch stream ended (etcd closed the connection, e.g. it stopped): watch again.
    #[error("etcd at {endpoint}: {operation}: the server closed the watch stream; watch again")]
    WatchClosed {
        /// The endpoint URL.
        endpoint: String,
        /// The watch.
        operation: String,
    },
    /// etcd answered with an error (`etcdserver: requested lease not found`).
    #[error("etcd at {endpoint}: {operation}: {message} (gRPC code {code})")]
    Server {
        /// The endpoint URL.
        endpoint: String,
        /// What was being done.
        operation: String,
        /// The gRPC status code ([`GRPC_NOT_FOUND`], [`GRPC_UNAUTHENTICATED`], ...), or the
        /// HTTP status when the answer carried no gRPC code.
        code: i32,
        /// etcd's message.
        message: String,
    },
    /// The watch's start revision has been compacted away: list the prefix again (with
    /// [`Client::range_prefix`](super::Client::range_prefix)) and watch from the listing's
    /// revision + 1.
    #[error(
        "etcd at {endpoint}: {operation}: the requested revision has been compacted \
         (oldest available {compact_revision}); list again and watch from there"
    )]
    Compacted {
        /// The endpoint URL.
        endpoint: String,
        /// The watch.
        operation: String,
        /// The oldest revision etcd still has.
        compact_revision: i64,
    },
    /// The answer could not be understood (not JSON, wrong shape, bad base64 or number).
    #[error("etcd at {endpoint}: {operation}: unexpected answer: {detail}")]
    BadResponse {
        /// The endpoint URL.
        endpoint: String,
        /// What was being done.
        operation: String,
        /// What was wrong with it.
        detail: String,
    },
}

impl EtcdError {
    /// Whether etcd reported that the thing asked for does not exist (gRPC `NotFound`, e.g.
    /// revoking an unknown lease).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Server { code, .. } if *code == GRPC_NOT_FOUND)
    }

    /// Whether the watch must be restarted from a fresh listing ([`EtcdError::Compacted`]).
    pub fn is_compacted(&self) -> bool {
        matches!(self, Self::Compacted { .. })
    }

    /// Whether the endpoint was unreachable or the connection broke, so another endpoint
    /// (or a later retry) may succeed.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Transport { .. } | Self::StreamIo { .. } | Self::WatchClosed { .. }
        )
    }

    /// Whether etcd rejected the authentication token (expired, unknown, or an old auth
    /// revision), so authenticating again may help.
    pub(super) fn is_token_rejected(&self) -> bool {
        match self {
            Self::Server { code, message, .. } => {
                *code == GRPC_UNAUTHENTICATED
                    || message.contains("invalid auth token")
                    || message.contains("revision of auth store is old")
            }
            _ => false,
        }
    }
}
