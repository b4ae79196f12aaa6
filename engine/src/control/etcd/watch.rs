//! [`Watch`]: one watch stream of the JSON gateway, read line by line.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use ureq::BodyReader;

use super::wire::{self, WatchMessage};
use super::{EtcdError, Result, WatchEvent};

/// How long a watch waits for any message before it gives up with an error: longer than
/// etcd's default progress-notification interval (10 minutes), which the watch asks for.
pub const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The most one message of the stream may weigh.
const MAX_MESSAGE_BYTES: u64 = 64 << 20;

/// Changes seen by a [`Watch`], up to a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    /// The store's revision when the batch was sent: after an error, watch again from
    /// `revision + 1` of the last batch.
    pub revision: i64,
    /// The changes, in revision order; empty for a progress notification.
    pub events: Vec<WatchEvent>,
}

/// A watch of a key prefix, from [`Client::watch_prefix`](super::Client::watch_prefix).
///
/// [`Watch::recv`] blocks until etcd sends something. Every error ends the watch (further
/// calls fail too): [`EtcdError::Compacted`] means list again, anything else means watch
/// again (with backoff) from the last revision seen + 1.
pub struct Watch {
    reader: BufReader<BodyReader<'static>>,
    endpoint: String,
    operation: String,
    ended: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("endpoint", &self.endpoint)
            .field("operation", &self.operation)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Wraps the response body of `/v3/watch` and reads etcd's confirmation (the `created`
    /// message); a refusal becomes the error.
    pub(super) fn start(
        endpoint: &str,
        operation: &str,
        body: BodyReader<'static>,
    ) -> Result<Self> {
        let mut watch = Self {
            reader: BufReader::new(body),
            endpoint: endpoint.to_owned(),
            operation: operation.to_owned(),
            ended: false,
        };
        match watch.read_message()? {
            WatchMessage::Created { .. } => Ok(watch),
            other => Err(watch.fail(other)),
        }
    }

    /// The endpoint the watch is connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Blocks until etcd sends the next changes (or a progress notification).
    pub fn recv(&mut self) -> Result<WatchBatch> {
        if self.ended {
            return Err(EtcdError::WatchClosed {
                endpoint: self.endpoint.clone(),
                operation: self.operation.clone(),
            });
        }
        let message = self.read_message()?;
        match message {
            WatchMessage::Events { revision, events } => Ok(WatchBatch { revision, events }),
            // A second "created" would be a server bug; there is nothing to report in it.
            WatchMessage::Created { revision } => Ok(WatchBatch {
                revision,
                events: Vec::new(),
            }),
            other => Err(self.fail(other)),
        }
    }

    /// The error a terminal message means; ends the watch.
    fn fail(&mut self, message: WatchMessage) -> EtcdError {
        self.ended = true;
        let endpoint = self.endpoint.clone();
        let operation = self.operation.clone();
        match message {
            WatchMessage::Compacted { compact_revision } => EtcdError::Compacted {
                endpoint,
                operation,
                compact_revision,
            },
            WatchMessage::Canceled { code, reason } => EtcdError::Server {
                endpoint,
                operation,
                code,
                message: if reason.is_empty() {
                    "the server canceled the watch".to_owned()
                } else {
                    reason
                },
            },
            WatchMessage::Error { code, message } => EtcdError::Server {
                endpoint,
                operation,
                code,
                message,
            },
            WatchMessage::Created { .. } | WatchMessage::Events { .. } => EtcdError::BadResponse {
                endpoint,
                operation,
                detail: "the watch was not confirmed".to_owned(),
            },
        }
    }

    /// Reads and parses the next non-empty line; errors end the watch.
    fn read_message(&mut self) -> Result<WatchMessage> {
        let result = self.read_message_inner();
        if result.is_err() {
            self.ended = true;
        }
        result
    }

    fn read_message_inner(&mut self) -> Result<WatchMessage> {
        loop {
            let mut line = Vec::new();
            let read = (&mut self.reader)
                .take(MAX_MESSAGE_BYTES)
                .read_until(b'\n', &mut line)
                .map_err(|source| EtcdError::StreamIo {
                    endpoint: self.endpoint.clone(),
                    operation: self.operation.clone(),
                    source,
                })?;
            if !line.ends_with(b"\n") {
                if read as u64 >= MAX_MESSAGE_BYTES {
                    return Err(
                        self.bad(format!("a message longer than {MAX_MESSAGE_BYTES} bytes"))
                    );
                }
                // End of stream, possibly in the middle of a message.
                return Err(EtcdError::WatchClosed {
                    endpoint: self.endpoint.clone(),
                    operation: self.operation.clone(),
                });
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            return wire::parse_watch_message(&line).map_err(|detail| self.bad(detail));
        }
    }

    fn bad(&self, detail: String) -> EtcdError {
        EtcdError::BadResponse {
            endpoint: self.endpoint.clone(),
            operation: self.operation.clone(),
            detail,
        }
    }
}
