//! [`EtcdServer`]: a real single-member etcd inside a network namespace.
//!
//! etcd runs as `ip netns exec <ns> etcd ...` with its data in a [`TempDir`], clients on
//! `<listen>:2379` and the (unused) peer port on the namespace's own `127.0.0.1:2380`, so
//! several servers in several namespaces never collide. Readiness, compaction and auth set-up
//! talk HTTP to etcd's JSON gateway from a thread inside the namespace
//! ([`Netns::run_inside`]): no traffic in the root namespace. Nothing sleeps a fixed time.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::{wait_until, Netns, NsChild, Result, TempDir, TestbedError, TERMINATE_GRACE};

/// How long etcd may take to answer `/health` after it was started.
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one HTTP exchange with etcd may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Server-side TLS for [`EtcdServer::start_tls`]: etcd serves `https://` with `cert_file`
/// and `key_file` and requires client certificates signed by `ca_file`.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// PEM server certificate (its SAN must name the listen address).
    pub cert_file: PathBuf,
    /// PEM key of the server certificate.
    pub key_file: PathBuf,
    /// PEM CA that signed the client certificates.
    pub ca_file: PathBuf,
}

/// A running etcd inside a namespace; killed (SIGTERM, then SIGKILL) on `Drop`.
#[derive(Debug)]
pub struct EtcdServer<'a> {
    netns: &'a Netns,
    listen: Ipv4Addr,
    tls: Option<EtcdTls>,
    /// Holds `data/` (created by etcd itself, which wants mode 0700) across restarts.
    dir: TempDir,
    child: Option<NsChild>,
}

impl<'a> EtcdServer<'a> {
    /// The client port.
    pub const CLIENT_PORT: u16 = 2379;

    /// Starts `etcd` in `netns`, serving `http://<listen>:2379`, and waits until `/health`
    /// answers `true`. `listen` must be an address of the namespace (`127.0.0.1` will do).
    pub fn start(netns: &'a Netns, listen: Ipv4Addr) -> Result<Self> {
        Self::start_inner(netns, listen, None)
    }

    /// Like [`EtcdServer::start`], serving `https://<listen>:2379` with `tls` and requiring
    /// client certificates. Waits only until the port accepts connections: the caller's
    /// TLS client polls for the rest.
    pub fn start_tls(netns: &'a Netns, listen: Ipv4Addr, tls: EtcdTls) -> Result<Self> {
        Self::start_inner(netns, listen, Some(tls))
    }

    fn start_inner(netns: &'a Netns, listen: Ipv4Addr, tls: Option<EtcdTls>) -> Result<Self> {
        let mut server = Self {
            netns,
            listen,
            tls,
            dir: TempDir::new("weft-etcd")?,
            child: None,
        };
        server.launch()?;
        Ok(server)
    }

    /// The client URL: `http://<listen>:2379` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.listen, Self::CLIENT_PORT)
    }

    /// The client address.
    pub fn address(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.listen, Self::CLIENT_PORT)
    }

    /// Whether the etcd process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(NsChild::is_running)
    }

    /// Stops etcd (SIGTERM, SIGKILL after [`TERMINATE_GRACE`]); its data stays for
    /// [`EtcdServer::restart`]. Clients' connections are closed.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.terminate(TERMINATE_GRACE)?;
        }
        Ok(())
    }

    /// Starts etcd again on the same data (stopping it first if it runs) and waits until it
    /// is ready.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// Everything etcd has logged so far (its current run).
    pub fn log(&self) -> String {
        self.child
            .as_ref()
            .map(|child| format!("{}{}", child.stdout(), child.stderr()))
            .unwrap_or_default()
    }

    /// Compacts the history up to `revision` (`/v3/kv/compaction`, physical), so watches
    /// from older revisions fail. Plain-HTTP servers only.
    pub fn compact(&self, revision: i64) -> Result<()> {
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        self.post_ok("/v3/kv/compaction", &body)
    }

    /// Turns on authentication with the user `root` (role `root`) and `root_password`, as
    /// `etcdctl user add root && etcdctl auth enable` would. Plain-HTTP servers only; after
    /// this every request needs a token.
    pub fn enable_auth(&self, root_password: &str) -> Result<()> {
        let user = format!(r#"{{"name":"root","password":{root_password:?}}}"#);
        self.post_ok("/v3/auth/user/add", &user)?;
        self.post_ok("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#)?;
        self.post_ok("/v3/auth/enable", "{}")
    }

    /// POSTs `body` to `path` from inside the namespace and requires HTTP 200.
    fn post_ok(&self, path: &str, body: &str) -> Result<()> {
        let address = self.address();
        let (status, answer) = self
            .netns
            .run_inside(|| http(address, "POST", path, body))?
            .map_err(|source| TestbedError::Io {
                what: format!("POST {path} to etcd at {address}"),
                source,
            })?;
        if status == 200 {
            Ok(())
        } else {
            Err(TestbedError::UnexpectedOutput {
                command: format!("POST {path} {body} to etcd at {address}"),
                output: format!("HTTP {status}: {answer}"),
            })
        }
    }

    fn launch(&mut self) -> Result<()> {
        let name = "weft-test";
        let data_dir = self.dir.path().join("data");
        let data_dir = data_dir.to_string_lossy().into_owned();
        let client_url = self.endpoint();
        let peer_url = "http://127.0.0.1:2380";
        let initial_cluster = format!("{name}={peer_url}");
        let mut argv: Vec<&str> = vec![
            "etcd",
            "--name",
            name,
            "--data-dir",
            &data_dir,
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            &initial_cluster,
            "--logger",
            "zap",
        ];
        let tls_files;
        if let Some(tls) = &self.tls {
            tls_files = [
                tls.cert_file.to_string_lossy().into_owned(),
                tls.key_file.to_string_lossy().into_owned(),
                tls.ca_file.to_string_lossy().into_owned(),
            ];
            argv.extend([
                "--cert-file",
                &tls_files[0],
                "--key-file",
                &tls_files[1],
                "--trusted-ca-file",
                &tls_files[2],
                "--client-cert-auth",
            ]);
        }
        let mut child = self.netns.spawn(&argv)?;
        let address = self.address();
        let with_tls = self.tls.is_some();
        let mut exited = None;
        let ready = self.netns.run_inside(|| {
            wait_until(
                ETCD_READY_TIMEOUT,
                &format!("etcd at {address} to be ready"),
                || {
                    if let Ok(Some(status)) = child.try_wait() {
                        exited = Some(status);
                        return true;
                    }
                    if with_tls {
                        TcpStream::connect_timeout(&SocketAddr::V4(address), HTTP_TIMEOUT).is_ok()
                    } else {
                        matches!(http(address, "GET", "/health", ""),
                            Ok((200, body)) if body.contains(r#""health":"true""#))
                    }
                },
            )
        })?;
        if let Some(status) = exited {
            return Err(TestbedError::CommandFailed {
                command: child.command().to_owned(),
                status,
                stderr: format!("{}{}", child.stdout(), child.stderr()),
            });
        }
        if let Err(error) = ready {
            log::warn!(
                "etcd did not get ready; its log:\n{}{}",
                child.stdout(),
                child.stderr()
            );
            return Err(error);
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for EtcdServer<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            log::warn!("cannot stop etcd: {error}");
        }
    }
}

/// One HTTP/1.1 exchange (`Connection: close`) with `address`; the status and the body.
fn http(address: SocketAddrV4, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(address), HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}

/// Runs `openssl` with `args` in `dir`: `Ok(false)` if openssl is not installed.
fn openssl(dir: &std::path::Path, args: &[&str]) -> Result<bool> {
    match std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(output) if output.status.success() => Ok(true),
        Ok(output) => Err(TestbedError::UnexpectedOutput {
            command: format!("openssl {}", args.join(" ")),
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(TestbedError::Io {
            what: "running openssl".into(),
            source,
        }),
    }
}

/// Makes test certificates in `dir` with openssl (EC P-256, valid one day): a CA
/// (`ca.pem`, `ca.key`), a server certificate for `server_ip` (`server.pem`, `server.key`) and
/// a client certificate (`client.pem`, `client.key`), both signed by the CA. `Ok(false)` if
/// openssl is not installed.
pub fn make_test_certificates(dir: &std::path::Path, server_ip: Ipv4Addr) -> Result<bool> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=weft-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    if !openssl(dir, &ca)? {
        return Ok(false);
    }
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|source| TestbedError::Io {
            what: format!("writing {name}"),
            source,
        })
    };
    write(
        "server.ext",
        format!("subjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth,clientAuth\n"),
    )?;
    write("client.ext", "extendedKeyUsage=clientAuth\n".into())?;
    for name in ["server", "client"] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let subject = format!("/CN=weft-test-{name}");
        let mut request = vec!["req", "-subj", &subject, "-keyout", &key, "-out", &csr];
        request.extend(ec);
        openssl(dir, &request)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        )?;
    }
    Ok(true)
}
