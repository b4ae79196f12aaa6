//! A small blocking etcd v3 client: what a flanneld replacement needs, over etcd's JSON
//! gateway.
//!
//! # Model
//!
//! etcd v3 serves its gRPC API also as JSON over HTTP/1.1 (the "gRPC gateway", on the same
//! client port): `POST /v3/kv/range` with `{"key": base64, ...}` answers the `RangeResponse`
//! as JSON. This client speaks that gateway with [`ureq`] (blocking, rustls), so it needs no
//! async runtime and no protobuf code, and it runs on a control-plane thread of its own; the
//! data path never touches it. A [`Client`] is `Send + Sync` and can be shared by a thread
//! that watches and one that renews leases.
//!
//! The operations are the ones flanneld's subnet manager uses (FLANNEL.md §1.4–1.7):
//! [`Client::range_prefix`] (listing plus the revision to watch from), [`Client::get`],
//! [`Client::put`], [`Client::create_if_absent`] (a txn comparing the key's version with 0),
//! [`Client::delete`], [`Client::lease_grant`], [`Client::lease_revoke`],
//! [`Client::lease_time_to_live`] and [`Client::watch_prefix`].
//!
//! # Invariants and behaviour
//!
//! - **Endpoints** are tried in order, starting with the last one that answered; a
//!   connection error (refused, timed out, TLS failure, reset) moves on to the next one, any
//!   answer from etcd (also an error answer) does not. A request whose answer was lost may
//!   thus be applied twice (on two members of the same cluster), which is harmless for every
//!   operation here except [`Client::create_if_absent`], which may then report `false` for a
//!   key it created itself: callers re-list, as flanneld does after a lost race.
//! - **TLS** is set up only when both a certificate and a key are configured (as flanneld's
//!   `--etcd-certfile`/`--etcd-keyfile`): the client presents them, and verifies the server
//!   against the CA file if one is given, else against the Mozilla roots. A CA file alone is
//!   ignored with a warning, as flanneld does. `https://` endpoints without a client
//!   certificate are verified against the Mozilla roots.
//! - **Authentication**: with a username and password the client calls
//!   `/v3/auth/authenticate` before its first request and sends the token in the
//!   `Authorization` header; when etcd rejects the token (expired, or the auth store
//!   changed) it authenticates once more and repeats the request. A server without auth
//!   enabled is used without a token, as etcd's own client does.
//! - **Watches** are one long-lived HTTP response each, read line by line. A compacted start
//!   revision ends the watch with [`EtcdError::Compacted`] (re-list, then watch from the
//!   listing's revision + 1); a dropped connection ends it with an error for which
//!   [`EtcdError::is_unreachable`] holds (watch again from the last revision seen + 1). The
//!   watch asks etcd for progress notifications (every 10 minutes by default) and gives up
//!   after [`WATCH_IDLE_TIMEOUT`] without any message, so a silently vanished server is
//!   noticed too.
//! - Nothing here panics on a bad answer: every malformed field is an
//!   [`EtcdError::BadResponse`].
//!
//! # Example
//!
//! ```no_run
//! use weft::control::etcd::{Client, EtcdConfig, WatchEvent};
//!
//! # fn main() -> Result<(), weft::control::etcd::EtcdError> {
//! let client = Client::new(EtcdConfig::new(["http://10.0.0.1:2379", "http://10.0.0.2:2379"]))?;
//! let listing = client.range_prefix("/coreos.com/network/subnets/")?;
//! let mut watch = client.watch_prefix("/coreos.com/network/subnets/", listing.revision + 1)?;
//! loop {
//!     let batch = watch.recv()?; // on error: list again (compacted) or watch again
//!     for event in batch.events {
//!         match event {
//!             WatchEvent::Put(kv) => println!("added {:?}", kv.key_str()),
//!             WatchEvent::Delete { key, .. } => println!("removed {}", String::from_utf8_lossy(&key)),
//!         }
//!     }
//! }
//! # }
//! ```

mod error;
mod watch;
mod wire;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
use ureq::Agent;

pub use error::{EtcdError, GRPC_NOT_FOUND, GRPC_UNAUTHENTICATED};
pub use watch::{Watch, WatchBatch, WATCH_IDLE_TIMEOUT};

/// The result type of this module.
pub type Result<T, E = EtcdError> = std::result::Result<T, E>;

/// The most a unary answer may weigh (a listing of every subnet of a big cluster is a few
/// MB); more is an error rather than unbounded memory.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// How to reach etcd: flanneld's `--etcd-*` flags.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:2379` or `https://host:2379`), tried in order.
    pub endpoints: Vec<String>,
    /// PEM file of the CA that signed the servers' certificates (`--etcd-cafile`); used only
    /// together with `cert_file` and `key_file`.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain (`--etcd-certfile`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (`--etcd-keyfile`).
    pub key_file: Option<PathBuf>,
    /// User to authenticate as (`--etcd-username`); needs `password` too.
    pub username: Option<String>,
    /// The user's password (`--etcd-password`).
    pub password: Option<String>,
    /// How long one request may take, connecting included (watches: connecting and the
    /// first answer).
    pub timeout: Duration,
}

impl EtcdConfig {
    /// The default timeout of one request.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A configuration for `endpoints` without TLS or authentication.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

impl Default for EtcdConfig {
    /// flanneld's defaults: `http://127.0.0.1:4001,http://127.0.0.1:2379`, no TLS, no auth.
    fn default() -> Self {
        Self {
            endpoints: vec![
                "http://127.0.0.1:4001".to_owned(),
                "http://127.0.0.1:2379".to_owned(),
            ],
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One key and its value, as etcd stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The id of the lease attached to the key, 0 for none.
    pub lease: i64,
    /// The revision that created the key (since its last deletion).
    pub create_revision: i64,
    /// The revision of its last modification.
    pub mod_revision: i64,
    /// How often it was written since it was created (1 after creation).
    pub version: i64,
}

impl Kv {
    /// The key as UTF-8, `None` if it is not.
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.key).ok()
    }

    /// The value as UTF-8, `None` if it is not.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// The keys of a prefix and the revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The keys, in key order.
    pub kvs: Vec<Kv>,
    /// The store's revision at the time of the read: watch from `revision + 1` to see every
    /// later change.
    pub revision: i64,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its id, to pass to [`Client::put`] and friends.
    pub id: i64,
    /// The TTL etcd granted, in seconds (at least the one asked for).
    pub ttl: i64,
}

/// A change seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or overwritten; `kv` is its new state.
    Put(Kv),
    /// The key was deleted (by a request or because its lease expired).
    Delete {
        /// The deleted key.
        key: Vec<u8>,
        /// The revision of the deletion.
        mod_revision: i64,
    },
}

/// A username and password.
#[derive(Clone)]
struct Credentials {
    username: String,
    password: String,
}

/// What the client knows about authentication.
#[derive(Debug, Clone)]
enum TokenState {
    /// Not authenticated yet.
    Unknown,
    /// The server has authentication disabled: send no token.
    NotNeeded,
    /// Send this token.
    Token(String),
}

/// A blocking etcd v3 client; see the [module documentation](self).
pub struct Client {
    agent: Agent,
    endpoints: Vec<String>,
    /// The index of the endpoint to try first: the last one that answered.
    preferred: AtomicUsize,
    credentials: Option<Credentials>,
    token: Mutex<TokenState>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .field("preferred", &self.preferred.load(Ordering::Relaxed))
            .field(
                "username",
                &self.credentials.as_ref().map(|c| c.username.as_str()),
            )
            .finish_non_exhaustive()
    }
}

/// `key` for messages: UTF-8 where it is, with replacement characters where not.
fn display_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// Reads the PEM file `path`, with an error naming it as `what`.
fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| EtcdError::TlsFile {
        what,
        path: path.to_owned(),
        detail: error.to_string(),
    })
}

/// The certificates of the PEM file `path` (at least one).
fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = read_pem(what, path)?;
    let bad = |detail: String| EtcdError::TlsFile {
        what,
        path: path.to_owned(),
        detail,
    };
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|error| bad(error.to_string()))? {
            PemItem::Certificate(certificate) => certificates.push(certificate),
            PemItem::PrivateKey(_) => {}
            // PemItem is non-exhaustive: ignore whatever else a future ureq parses.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
    if certificates.is_empty() {
        return Err(bad("no PEM certificate in it".to_owned()));
    }
    Ok(certificates)
}

/// The TLS configuration flanneld would use: client certificate and key both set, or none.
fn tls_config(config: &EtcdConfig) -> Result<Option<TlsConfig>> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        if config.ca_file.is_some() || config.cert_file.is_some() || config.key_file.is_some() {
            tracing::warn!(
                "etcd: TLS needs both a client certificate and its key; ignoring the CA, \
                 certificate or key file given alone and connecting without a client \
                 certificate (http:// endpoints are then insecure)"
            );
        }
        return Ok(None);
    };
    let chain = read_certificates("certificate file", cert_file)?;
    let key_pem = read_pem("key file", key_file)?;
    let key = PrivateKey::from_pem(&key_pem).map_err(|error| EtcdError::TlsFile {
        what: "key file",
        path: key_file.clone(),
        detail: error.to_string(),
    })?;
    let roots = match &config.ca_file {
        Some(ca_file) => RootCerts::Specific(Arc::new(read_certificates("CA file", ca_file)?)),
        None => RootCerts::WebPki,
    };
    Ok(Some(
        TlsConfig::builder()
            .client_cert(Some(ClientCert::new_with_certs(&chain, key)))
            .root_certs(roots)
            .build(),
    ))
}

/// Checks and normalizes one endpoint URL (no trailing `/`).
fn normalize_endpoint(endpoint: &str) -> Result<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    let host = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"));
    match host {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(endpoint.to_owned()),
        _ => Err(EtcdError::Config(format!(
            "endpoint {endpoint:?} is not a URL like http://10.0.0.1:2379 or https://etcd:2379"
        ))),
    }
}

impl Client {
    /// A client for `config`. Reads the TLS files but does not connect: the first request
    /// does (and authenticates, with credentials).
    pub fn new(config: EtcdConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(EtcdError::Config("no endpoint given".to_owned()));
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|endpoint| normalize_endpoint(endpoint))
            .collect::<Result<Vec<_>>>()?;
        let tls = tls_config(&config)?;
        let credentials = match (config.username, config.password) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Some(Credentials { username, password })
            }
            (Some(username), None) if !username.is_empty() => {
                return Err(EtcdError::Config(format!(
                    "a username ({username}) needs a password"
                )))
            }
            _ => None,
        };
        let mut builder = Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = tls {
            builder = builder.tls_config(tls);
        }
        Ok(Self {
            agent: builder.build().new_agent(),
            endpoints,
            preferred: AtomicUsize::new(0),
            credentials,
            token: Mutex::new(TokenState::Unknown),
            timeout: config.timeout,
        })
    }

    /// The endpoints, normalized, in the order they were given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Every key starting with `prefix`, and the revision they were read at.
    pub fn range_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Listing> {
        let prefix = prefix.as_ref();
        let body = json!({
            "key": wire::encode(prefix),
            "range_end": wire::encode(&wire::prefix_range_end(prefix)),
        });
        let operation = format!("range {}", display_key(prefix));
        let response: wire::RangeResponse = self.call(&operation, "/v3/kv/range", &body)?;
        let revision = response.header.revision;
        Ok(Listing {
            kvs: response.into_kvs(),
            revision,
        })
    }

    /// The key `key`, `None` if it does not exist.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Kv>> {
        let key = key.as_ref();
        let body = json!({ "key": wire::encode(key) });
        let operation = format!("get {}", display_key(key));
        let response: wire::RangeResponse = self.call(&operation, "/v3/kv/range", &body)?;
        Ok(response.into_kvs().into_iter().next())
    }

    /// Sets `key` to `value`, attached to the lease `lease` (0: none); returns the revision
    /// of the write.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, lease: i64) -> Result<i64> {
        let key = key.as_ref();
        let body = put_request(key, value.as_ref(), lease);
        let operation = format!("put {}", display_key(key));
        let response: wire::HeaderOnly = self.call(&operation, "/v3/kv/put", &body)?;
        Ok(response.header.revision)
    }

    /// Creates `key` with `value` and the lease `lease` (0: none) only if it does not exist
    /// (a txn `version(key) == 0`, as flanneld's `createSubnet`); whether it was created.
    pub fn create_if_absent(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: i64,
    ) -> Result<bool> {
        let key = key.as_ref();
        let body = json!({
            "compare": [{
                "target": "VERSION",
                "result": "EQUAL",
                "key": wire::encode(key),
                "version": "0",
            }],
            "success": [{ "request_put": put_request(key, value.as_ref(), lease) }],
        });
        let operation = format!("create {}", display_key(key));
        let response: wire::TxnResponse = self.call(&operation, "/v3/kv/txn", &body)?;
        Ok(response.succeeded)
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        let body = json!({ "key": wire::encode(key) });
        let operation = format!("delete {}", display_key(key));
        let response: wire::DeleteRangeResponse =
            self.call(&operation, "/v3/kv/deleterange", &body)?;
        Ok(response.deleted > 0)
    }

    /// Grants a lease of `ttl_secs` seconds.
    pub fn lease_grant(&self, ttl_secs: i64) -> Result<Lease> {
        let body = json!({ "TTL": ttl_secs.to_string(), "ID": "0" });
        let operation = format!("grant a lease of {ttl_secs} s");
        let response: wire::LeaseGrantResponse = self.call(&operation, "/v3/lease/grant", &body)?;
        if !response.error.is_empty() || response.id == 0 {
            return Err(EtcdError::Server {
                endpoint: self.preferred_endpoint().to_owned(),
                operation,
                code: 0,
                message: if response.error.is_empty() {
                    "granted lease id 0".to_owned()
                } else {
                    response.error
                },
            });
        }
        Ok(Lease {
            id: response.id,
            ttl: response.ttl,
        })
    }

    /// Revokes the lease `id`, deleting every key attached to it. An unknown lease is an
    /// error for which [`EtcdError::is_not_found`] holds.
    pub fn lease_revoke(&self, id: i64) -> Result<()> {
        let body = json!({ "ID": id.to_string() });
        let operation = format!("revoke lease {id:x}");
        let _: wire::HeaderOnly = self.call(&operation, "/v3/lease/revoke", &body)?;
        Ok(())
    }

    /// The seconds left of the lease `id`; `None` when etcd does not know it (never granted,
    /// revoked, expired, or 0 for a key without a lease: etcd answers TTL −1 to all of them).
    pub fn lease_time_to_live(&self, id: i64) -> Result<Option<i64>> {
        let body = json!({ "ID": id.to_string() });
        let operation = format!("time-to-live of lease {id:x}");
        let response: wire::LeaseTimeToLiveResponse =
            self.call(&operation, "/v3/lease/timetolive", &body)?;
        Ok((response.ttl >= 0).then_some(response.ttl))
    }

    /// Watches every key starting with `prefix`, from `start_revision` on (0: from now).
    ///
    /// Returns once etcd confirmed the watch; [`Watch::recv`] then yields the changes.
    pub fn watch_prefix(&self, prefix: impl AsRef<[u8]>, start_revision: i64) -> Result<Watch> {
        let prefix = prefix.as_ref();
        let body =
            wire::watch_create_request(prefix, &wire::prefix_range_end(prefix), start_revision);
        let operation = format!(
            "watch {} from revision {start_revision}",
            display_key(prefix)
        );
        self.on_endpoints(|endpoint| {
            self.authenticated(endpoint, |token| {
                let request = self
                    .agent
                    .post(format!("{endpoint}/v3/watch"))
                    .config()
                    .timeout_global(None)
                    .timeout_connect(Some(self.timeout))
                    .timeout_recv_response(Some(self.timeout))
                    .timeout_per_read(Some(WATCH_IDLE_TIMEOUT))
                    .build();
                let request = with_token(request.content_type("application/json"), token);
                let transport = |source| EtcdError::Transport {
                    endpoint: endpoint.to_owned(),
                    operation: operation.clone(),
                    source,
                };
                let response = request.send(body.to_string()).map_err(transport)?;
                let status = response.status().as_u16();
                if status != 200 {
                    let bytes = read_body(response).map_err(transport)?;
                    return Err(error_answer(endpoint, &operation, status, &bytes));
                }
                Watch::start(endpoint, &operation, response.into_body().into_reader())
            })
        })
    }

    /// The endpoint tried first.
    fn preferred_endpoint(&self) -> &str {
        let index = self.preferred.load(Ordering::Relaxed);
        self.endpoints
            .get(index)
            .or(self.endpoints.first())
            .map_or("", String::as_str)
    }

    /// One unary call, on the endpoints in turn, authenticated.
    fn call<T: DeserializeOwned>(&self, operation: &str, path: &str, body: &Value) -> Result<T> {
        let body = body.to_string();
        self.on_endpoints(|endpoint| {
            self.authenticated(endpoint, |token| {
                self.exchange(endpoint, operation, path, &body, token)
            })
        })
    }

    /// Runs `attempt` on each endpoint in turn, starting with the preferred one, until one
    /// answers; an unreachable endpoint moves on to the next.
    fn on_endpoints<T>(&self, mut attempt: impl FnMut(&str) -> Result<T>) -> Result<T> {
        let count = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failure = None;
        for offset in 0..count {
            let index = (first + offset) % count;
            let Some(endpoint) = self.endpoints.get(index) else {
                continue;
            };
            match attempt(endpoint) {
                Ok(value) => {
                    if index != first {
                        tracing::info!("etcd: now using {endpoint}");
                        self.preferred.store(index, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Err(error) if error.is_unreachable() => {
                    if offset + 1 < count {
                        tracing::warn!("{error}; trying the next endpoint");
                    }
                    failure = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(failure.unwrap_or_else(|| EtcdError::Config("no endpoint given".to_owned())))
    }

    fn token_state(&self) -> MutexGuard<'_, TokenState> {
        // The state is a plain value: a panic elsewhere cannot leave it half-written.
        self.token
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `request` with the token to send (if any), authenticating first if needed, and
    /// once more if etcd rejects the token.
    fn authenticated<T>(
        &self,
        endpoint: &str,
        mut request: impl FnMut(Option<&str>) -> Result<T>,
    ) -> Result<T> {
        let Some(credentials) = &self.credentials else {
            return request(None);
        };
        let state = self.token_state().clone();
        let state = match state {
            TokenState::Unknown => self.authenticate(endpoint, credentials)?,
            known => known,
        };
        let token = match &state {
            TokenState::Token(token) => Some(token.as_str()),
            _ => None,
        };
        match request(token) {
            Err(error)
                if error.is_token_rejected()
                    || (token.is_none()
                        && matches!(&error, EtcdError::Server { message, .. }
                            if message.contains("user name is empty"))) =>
            {
                tracing::info!("{error}; authenticating again");
                let state = self.authenticate(endpoint, credentials)?;
                let token = match &state {
                    TokenState::Token(token) => Some(token.as_str()),
                    _ => None,
                };
                request(token)
            }
            other => other,
        }
    }

    /// `/v3/auth/authenticate` on `endpoint`; remembers and returns the outcome.
    fn authenticate(&self, endpoint: &str, credentials: &Credentials) -> Result<TokenState> {
        let operation = format!("authenticate as {}", credentials.username);
        let body = json!({
            "name": credentials.username,
            "password": credentials.password,
        })
        .to_string();
        let state = match self.exchange::<wire::AuthenticateResponse>(
            endpoint,
            &operation,
            "/v3/auth/authenticate",
            &body,
            None,
        ) {
            Ok(response) if !response.token.is_empty() => TokenState::Token(response.token),
            Ok(_) => {
                return Err(EtcdError::BadResponse {
                    endpoint: endpoint.to_owned(),
                    operation,
                    detail: "no token in the answer".to_owned(),
                })
            }
            Err(EtcdError::Server { message, .. })
                if message.contains("authentication is not enabled") =>
            {
                tracing::info!(
                    "etcd at {endpoint}: authentication is not enabled; sending no token"
                );
                TokenState::NotNeeded
            }
            Err(error) => return Err(error),
        };
        *self.token_state() = state.clone();
        Ok(state)
    }

    /// One unary request on one endpoint: POST `body` to `path`, parse the answer as `T`.
    fn exchange<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        operation: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> Result<T> {
        let transport = |source| EtcdError::Transport {
            endpoint: endpoint.to_owned(),
            operation: operation.to_owned(),
            source,
        };
        let request = self
            .agent
            .post(format!("{endpoint}{path}"))
            .content_type("application/json");
        let response = with_token(request, token).send(body).map_err(transport)?;
        let status = response.status().as_u16();
        let bytes = read_body(response).map_err(transport)?;
        if status != 200 {
            return Err(error_answer(endpoint, operation, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|error| EtcdError::BadResponse {
            endpoint: endpoint.to_owned(),
            operation: operation.to_owned(),
            detail: format!("{error} in {}", snippet(&bytes)),
        })
    }
}

/// The whole body of a unary answer, at most [`MAX_RESPONSE_BYTES`].
fn read_body(response: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, ureq::Error> {
    response
        .into_body()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
}

/// Adds the `Authorization` header carrying `token`, if any.
fn with_token(
    request: ureq::RequestBuilder<ureq::typestate::WithBody>,
    token: Option<&str>,
) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
    match token {
        Some(token) => request.header("Authorization", token),
        None => request,
    }
}

/// The body of a put request (also inside a txn).
fn put_request(key: &[u8], value: &[u8], lease: i64) -> Value {
    let mut body = json!({ "key": wire::encode(key), "value": wire::encode(value) });
    if lease != 0 {
        body["lease"] = Value::String(lease.to_string());
    }
    body
}

/// The first 200 characters of an answer, for messages.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{:?}...", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// The error an answer with HTTP status `status` means: etcd's JSON error
/// (`{"error": ..., "code": 5}`) or, if it is not one, the status and the text.
fn error_answer(endpoint: &str, operation: &str, status: u16, bytes: &[u8]) -> EtcdError {
    let (code, message) = match serde_json::from_slice::<wire::ErrorBody>(bytes) {
        Ok(body) if !body.message.is_empty() || !body.error.is_empty() => {
            let message = if body.message.is_empty() {
                body.error
            } else {
                body.message
            };
            let code = if body.code != 0 {
                body.code
            } else {
                i32::from(status)
            };
            (code, message)
        }
        _ => (
            i32::from(status),
            format!("HTTP status {status}: {}", snippet(bytes)),
        ),
    };
    EtcdError::Server {
        endpoint: endpoint.to_owned(),
        operation: operation.to_owned(),
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_and_normalized() {
        assert_eq!(
            normalize_endpoint(" http://10.0.0.1:2379/ ").unwrap(),
            "http://10.0.0.1:2379"
        );
        assert!(normalize_endpoint("https://etcd:2379").is_ok());
        assert!(normalize_endpoint("10.0.0.1:2379").is_err());
        assert!(normalize_endpoint("http://").is_err());
        assert!(normalize_endpoint("unix:///run/etcd.sock").is_err());
        assert!(Client::new(EtcdConfig::new(Vec::<String>::new())).is_err());
    }

    #[test]
    fn a_ca_alone_is_ignored_and_missing_files_are_named() {
        let config = EtcdConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..EtcdConfig::default()
        };
        assert!(Client::new(config).is_ok());
        let config = EtcdConfig {
            cert_file: Some("/nonexistent/cert.pem".into()),
            key_file: Some("/nonexistent/key.pem".into()),
            ..EtcdConfig::default()
        };
        let error = Client::new(config).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
    }

    #[test]
    fn error_answers() {
        let error = error_answer(
            "http://e:2379",
            "revoke lease 1",
            404,
            br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        );
        assert!(error.is_not_found());
        assert_eq!(
            error.to_string(),
            "etcd at http://e:2379: revoke lease 1: etcdserver: requested lease not found (gRPC code 5)"
        );
        let error = error_answer("http://e:2379", "range /x", 401, br#"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#);
        assert!(error.is_token_rejected());
        let error = error_answer("http://e:2379", "range /x", 404, b"404 page not found\n");
        assert!(error.to_string().contains("HTTP status 404"), "{error}");
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let config = EtcdConfig {
            username: Some("root".into()),
            password: Some("secret".into()),
            ..EtcdConfig::default()
        };
        assert!(!format!("{config:?}").contains("secret"));
        let client = Client::new(config).unwrap();
        assert!(!format!("{client:?}").contains("secret"));
    }
}
