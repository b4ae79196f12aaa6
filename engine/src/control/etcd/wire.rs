//! The JSON shapes of etcd's gRPC gateway (pure: no I/O), as etcd 3.4 writes them.
//!
//! The gateway is grpc-gateway's JSON mapping of the protobuf messages (`jsonpb` with
//! `OrigName`): `bytes` fields are standard base64 with padding, `int64`/`uint64` fields are
//! JSON **strings** (`"revision":"7"`), and every field holding its zero value is **omitted**
//! (`lease` of a key without a lease, `succeeded` of a failed txn, `type` of a PUT event,
//! `count` of an empty range, even `revision` in the header of a watch canceled for
//! compaction). So every field here defaults, numbers are accepted as strings or as JSON
//! numbers, and nothing here panics on a malformed answer: it becomes an error string.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Kv, WatchEvent};

/// Base64 of `bytes`, as the gateway wants `bytes` fields.
pub(super) fn encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// The end of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented and everything after it dropped;
/// `\0` ("to the end of the key space") for an empty prefix or one of only 0xff bytes.
pub(super) fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            if let Some(byte) = end.last_mut() {
                *byte = last + 1;
            }
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// An `int64` field: a JSON string of decimal digits (the gateway's form), or a number.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::String(text) => text
            .parse()
            .map_err(|_| de::Error::custom(format!("not an int64: {text:?}"))),
        Value::Number(number) => number
            .as_i64()
            .ok_or_else(|| de::Error::custom(format!("not an int64: {number}"))),
        Value::Null => Ok(0),
        other => Err(de::Error::custom(format!("not an int64: {other}"))),
    }
}

/// A `bytes` field: standard base64 with padding.
fn bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(Vec::new()),
        Some(text) => BASE64
            .decode(text.as_bytes())
            .map_err(|error| de::Error::custom(format!("bad base64 {text:?}: {error}"))),
    }
}

/// `etcdserverpb.ResponseHeader`; only the revision matters to a client.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Header {
    /// The key-value store's revision when the request was applied.
    #[serde(deserialize_with = "int64")]
    pub revision: i64,
}

/// `mvccpb.KeyValue`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyValue {
    #[serde(deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    create_revision: i64,
    #[serde(deserialize_with = "int64")]
    mod_revision: i64,
    #[serde(deserialize_with = "int64")]
    version: i64,
    #[serde(deserialize_with = "bytes")]
    value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    lease: i64,
}

impl From<KeyValue> for Kv {
    fn from(kv: KeyValue) -> Self {
        Kv {
            key: kv.key,
            value: kv.value,
            lease: kv.lease,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }
    }
}

/// `RangeResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RangeResponse {
    pub header: Header,
    kvs: Vec<KeyValue>,
}

impl RangeResponse {
    /// The key-values, in key order.
    pub fn into_kvs(self) -> Vec<Kv> {
        self.kvs.into_iter().map(Kv::from).collect()
    }
}

/// `PutResponse`, `LeaseRevokeResponse`, `AuthEnableResponse`...: a header and nothing we use.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct HeaderOnly {
    pub header: Header,
}

/// `TxnResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct TxnResponse {
    pub header: Header,
    /// Whether the comparisons held (omitted when false).
    pub succeeded: bool,
}

/// `DeleteRangeResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DeleteRangeResponse {
    pub header: Header,
    /// How many keys were deleted (omitted when 0).
    #[serde(deserialize_with = "int64")]
    pub deleted: i64,
}

/// `LeaseGrantResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct LeaseGrantResponse {
    #[serde(rename = "ID", deserialize_with = "int64")]
    pub id: i64,
    #[serde(rename = "TTL", deserialize_with = "int64")]
    pub ttl: i64,
    /// Set when the grant failed (older servers put it here rather than in a gRPC error).
    pub error: String,
}

/// `LeaseTimeToLiveResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct LeaseTimeToLiveResponse {
    /// Remaining seconds; −1 for an unknown (never granted, revoked or expired) lease.
    #[serde(rename = "TTL", deserialize_with = "int64")]
    pub ttl: i64,
}

/// `AuthenticateResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AuthenticateResponse {
    pub token: String,
}

/// The body of a failed unary call: `{"error": "...", "message": "...", "code": 5}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ErrorBody {
    pub error: String,
    pub message: String,
    pub code: i32,
}

/// An error inside the watch stream: `{"error": {"grpc_code": 14, "message": "..."}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamError {
    grpc_code: i32,
    http_code: i32,
    message: String,
}

/// One message of the watch stream: `{"result": WatchResponse}` or `{"error": ...}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamMessage {
    result: Option<WatchResponse>,
    error: Option<StreamError>,
}

/// `WatchResponse`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchResponse {
    header: Header,
    created: bool,
    canceled: bool,
    #[serde(deserialize_with = "int64")]
    compact_revision: i64,
    cancel_reason: String,
    events: Vec<Event>,
}

/// `mvccpb.Event`; `type` is omitted for PUT (the zero value).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    kv: KeyValue,
}

/// What one message of the watch stream means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WatchMessage {
    /// The watch was created (the first message).
    Created {
        /// The header revision.
        revision: i64,
    },
    /// Events (possibly none: a progress notification), up to `revision`.
    Events {
        /// The header revision.
        revision: i64,
        /// The events, in revision order.
        events: Vec<WatchEvent>,
    },
    /// The start revision has been compacted away; everything before `compact_revision`
    /// is gone.
    Compacted {
        /// The oldest revision still available.
        compact_revision: i64,
    },
    /// The server canceled the watch for another reason.
    Canceled {
        /// The gRPC code the reason names (16 for a rejected token), or 0.
        code: i32,
        /// etcd's reason, possibly empty.
        reason: String,
    },
    /// The gateway reported an error inside the stream.
    Error {
        /// The gRPC code.
        code: i32,
        /// The message.
        message: String,
    },
}

/// The gRPC code named in a cancel reason such as
/// `rpc error: code = Unauthenticated desc = etcdserver: invalid auth token`.
fn code_in_reason(reason: &str) -> i32 {
    const CODES: [(&str, i32); 6] = [
        ("code = InvalidArgument", 3),
        ("code = NotFound", 5),
        ("code = PermissionDenied", 7),
        ("code = FailedPrecondition", 9),
        ("code = Unavailable", 14),
        ("code = Unauthenticated", 16),
    ];
    CODES
        .iter()
        .find(|(text, _)| reason.contains(text))
        .map(|&(_, code)| code)
        .unwrap_or(0)
}

/// Parses one line of the watch stream.
pub(super) fn parse_watch_message(line: &[u8]) -> Result<WatchMessage, String> {
    let message: StreamMessage =
        serde_json::from_slice(line).map_err(|error| format!("bad watch message: {error}"))?;
    if let Some(error) = message.error {
        let code = if error.grpc_code != 0 {
            error.grpc_code
        } else {
            error.http_code
        };
        return Ok(WatchMessage::Error {
            code,
            message: error.message,
        });
    }
    let Some(result) = message.result else {
        return Err("watch message without result or error".to_owned());
    };
    if result.compact_revision != 0 {
        return Ok(WatchMessage::Compacted {
            compact_revision: result.compact_revision,
        });
    }
    if result.canceled {
        return Ok(WatchMessage::Canceled {
            code: code_in_reason(&result.cancel_reason),
            reason: result.cancel_reason,
        });
    }
    let revision = result.header.revision;
    if result.created {
        return Ok(WatchMessage::Created { revision });
    }
    let events = result
        .events
        .into_iter()
        .map(|event| match event.kind.as_str() {
            "" | "PUT" => Ok(WatchEvent::Put(Kv::from(event.kv))),
            "DELETE" => Ok(WatchEvent::Delete {
                key: event.kv.key,
                mod_revision: event.kv.mod_revision,
            }),
            other => Err(format!("unknown watch event type {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    Ok(WatchMessage::Events { revision, events })
}

/// The body of `/v3/watch` creating a watch of `[key, range_end)` from `start_revision`.
pub(super) fn watch_create_request(key: &[u8], range_end: &[u8], start_revision: i64) -> Value {
    json!({
        "create_request": {
            "key": encode(key),
            "range_end": encode(range_end),
            "start_revision": start_revision.to_string(),
            "progress_notify": true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_ends() {
        assert_eq!(prefix_range_end(b"/a/"), b"/a0");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_range_end(b""), b"\0");
    }

    #[test]
    fn range_response_with_omitted_fields() {
        // Verbatim from etcd 3.4.23: `lease` present, `count` as a string.
        let body = br#"{"header":{"cluster_id":"2037210783374497686","member_id":"13195394291058371180","revision":"3","raft_term":"2"},"kvs":[{"key":"YQ==","create_revision":"3","mod_revision":"3","version":"1","value":"MQ==","lease":"7668682548876572935"}],"count":"1"}"#;
        let response: RangeResponse = serde_json::from_slice(body).unwrap();
        assert_eq!(response.header.revision, 3);
        let kvs = response.into_kvs();
        assert_eq!(
            kvs,
            vec![Kv {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                lease: 7668682548876572935,
                create_revision: 3,
                mod_revision: 3,
                version: 1,
            }]
        );
        // An empty range omits `kvs` and `count`.
        let empty: RangeResponse =
            serde_json::from_slice(br#"{"header":{"revision":"2"}}"#).unwrap();
        assert!(empty.into_kvs().is_empty());
    }

    #[test]
    fn bad_numbers_and_base64_are_errors_not_panics() {
        assert!(serde_json::from_slice::<Header>(br#"{"revision":"x"}"#).is_err());
        assert!(serde_json::from_slice::<Header>(br#"{"revision":1.5}"#).is_err());
        assert!(serde_json::from_slice::<RangeResponse>(br#"{"kvs":[{"key":"YQ"}]}"#).is_err());
        assert_eq!(
            serde_json::from_slice::<Header>(br#"{"revision":12}"#)
                .unwrap()
                .revision,
            12
        );
        assert!(parse_watch_message(b"not json").is_err());
        assert!(parse_watch_message(b"{}").is_err());
    }

    #[test]
    fn watch_messages() {
        let created = br#"{"result":{"header":{"cluster_id":"1","member_id":"2","revision":"5","raft_term":"2"},"created":true}}"#;
        assert_eq!(
            parse_watch_message(created),
            Ok(WatchMessage::Created { revision: 5 })
        );
        let put = br#"{"result":{"header":{"revision":"6"},"events":[{"kv":{"key":"cDE=","create_revision":"6","mod_revision":"6","version":"1","value":"MQ=="}}]}}"#;
        let Ok(WatchMessage::Events { revision, events }) = parse_watch_message(put) else {
            panic!("not events");
        };
        assert_eq!(revision, 6);
        assert!(
            matches!(&events[..], [WatchEvent::Put(kv)] if kv.key == b"p1" && kv.value == b"1")
        );
        let delete = br#"{"result":{"header":{"revision":"7"},"events":[{"type":"DELETE","kv":{"key":"cDE=","mod_revision":"7"}}]}}"#;
        assert_eq!(
            parse_watch_message(delete),
            Ok(WatchMessage::Events {
                revision: 7,
                events: vec![WatchEvent::Delete {
                    key: b"p1".to_vec(),
                    mod_revision: 7
                }],
            })
        );
        // Compaction: no revision in the header, canceled with compact_revision.
        let compacted = br#"{"result":{"header":{"cluster_id":"1","raft_term":"2"},"canceled":true,"compact_revision":"6"}}"#;
        assert_eq!(
            parse_watch_message(compacted),
            Ok(WatchMessage::Compacted {
                compact_revision: 6
            })
        );
        let unauthenticated = br#"{"result":{"header":{"revision":"7"},"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"}}"#;
        assert!(matches!(
            parse_watch_message(unauthenticated),
            Ok(WatchMessage::Canceled { code: 16, .. })
        ));
        let error = br#"{"error":{"grpc_code":14,"http_code":503,"message":"unavailable","http_status":"Service Unavailable"}}"#;
        assert!(matches!(
            parse_watch_message(error),
            Ok(WatchMessage::Error { code: 14, .. })
        ));
        assert!(
            parse_watch_message(br#"{"result":{"events":[{"type":"BOGUS","kv":{}}]}}"#).is_err()
        );
    }
}
