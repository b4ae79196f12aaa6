//! `subnet.env`, the file flanneld leaves for the CNI plugin (FLANNEL.md §2, §1.6).
//!
//! flannel `pkg/subnet/subnet.go WriteSubnetFile` writes, in this order and nothing else:
//!
//! ```text
//! FLANNEL_NETWORK=10.5.0.0/16
//! FLANNEL_SUBNET=10.5.52.1/24
//! FLANNEL_IPV6_NETWORK=fc00::/48
//! FLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=false
//! ```
//!
//! `FLANNEL_SUBNET` is the lease's address plus one (the first usable address, which the
//! CNI bridge takes) with the lease's prefix length; the IPv6 lines are there only for a
//! dual-stack network. The file is replaced atomically (`renameio.WriteFile(path, b, 0644)`:
//! temporary file in the same directory, fsync, rename; mode 0644 whatever the umask),
//! after creating the directory with mode 0755.
//!
//! On the next start flanneld reads the previous subnet back (`main.go
//! ReadCIDRFromSubnetFile`, godotenv + `net.ParseCIDR`, so `10.5.52.1/24` becomes
//! `10.5.52.0/24`) to ask for the same subnet again: [`read_previous`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::net::{Ipv4Net, Ipv6Net};

/// Why `subnet.env` could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct SubnetEnvError {
    /// What was being done, e.g. "create the directory".
    pub action: &'static str,
    /// The file or directory involved.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// The contents of `subnet.env`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `Network` of the flannel config (`FLANNEL_NETWORK`).
    pub network: Ipv4Net,
    /// This host's IPv4 lease, as in its key (`FLANNEL_SUBNET` is its address + 1).
    pub subnet: Ipv4Net,
    /// `IPv6Network` and this host's IPv6 lease, for a dual-stack network.
    pub ipv6: Option<(Ipv6Net, Ipv6Net)>,
    /// The overlay device's MTU (`FLANNEL_MTU`): udp underlay − 28, vxlan underlay − 50.
    pub mtu: u32,
    /// Whether flanneld masquerades traffic leaving the overlay (`--ip-masq`).
    pub ipmasq: bool,
}

impl SubnetEnv {
    /// The file's text, byte-exact with flanneld.
    pub fn render(&self) -> String {
        let first_v4 = Ipv4Net::new(
            Ipv4Addr::from(u32::from(self.subnet.addr()).wrapping_add(1)),
            self.subnet.prefix_len(),
        )
        .expect("same prefix length");
        let mut out = format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={first_v4}\n",
            self.network
        );
        if let Some((network6, subnet6)) = self.ipv6 {
            let first_v6 = Ipv6Net::new(
                Ipv6Addr::from(u128::from(subnet6.addr()).wrapping_add(1)),
                subnet6.prefix_len(),
            )
            .expect("same prefix length");
            out.push_str(&format!(
                "FLANNEL_IPV6_NETWORK={network6}\nFLANNEL_IPV6_SUBNET={first_v6}\n"
            ));
        }
        out.push_str(&format!(
            "FLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.mtu, self.ipmasq
        ));
        out
    }

    /// Replaces `path` atomically with [`SubnetEnv::render`]: the directory is created
    /// (mode 0755) if missing, the text goes to a temporary file next to `path`, is synced
    /// and renamed over it; the file ends up with mode 0644 whatever the umask.
    pub fn write_atomic(&self, path: &Path) -> Result<(), SubnetEnvError> {
        write_atomic(path, self.render().as_bytes())
    }
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SubnetEnvError + 'a {
    move |source| SubnetEnvError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SubnetEnvError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| SubnetEnvError {
        action: "write",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(err("create the directory", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(err("create the temporary file", &tmp))?;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(err("set the mode of", &tmp))?;
        file.write_all(bytes).map_err(err("write", &tmp))?;
        file.sync_all().map_err(err("sync", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(err("replace", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable; failing to sync a directory is not worth an error.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The value of `key` in dotenv text, as godotenv reads it closely enough for flanneld's
/// own files: `KEY=value` lines, optional `export `, optional quotes, `#` comments;
/// the last assignment wins. Anything else is skipped.
fn env_value(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let v = match v.chars().next() {
            Some(q @ ('"' | '\'')) => match v[1..].find(q) {
                Some(end) => &v[1..1 + end],
                None => continue,
            },
            _ => v.split(" #").next().unwrap_or("").trim(),
        };
        found = Some(v.to_string());
    }
    found
}

/// The subnet(s) recorded in a previous `subnet.env`, host bits dropped
/// (`FLANNEL_SUBNET=10.5.52.1/24` gives `10.5.52.0/24`). `None` if the file is missing or
/// unreadable or holds no single valid `FLANNEL_SUBNET` (flanneld: a comma-separated list
/// of several is an error); the IPv6 part is `None` unless `FLANNEL_IPV6_SUBNET` is one
/// valid IPv6 CIDR. Never fails otherwise: junk lines are skipped.
pub fn read_previous(path: &Path) -> Option<(Ipv4Net, Option<Ipv6Net>)> {
    let bytes = fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let single = |key: &str| -> Option<String> {
        let v = env_value(&text, key)?;
        (!v.contains(',')).then_some(v)
    };
    let v4 = Ipv4Net::parse_cidr(&single("FLANNEL_SUBNET")?)?;
    let v6 = single("FLANNEL_IPV6_SUBNET").and_then(|v| Ipv6Net::parse_cidr(&v));
    Some((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net4(s: &str) -> Ipv4Net {
        Ipv4Net::parse_cidr(s).unwrap()
    }

    fn net6(s: &str) -> Ipv6Net {
        Ipv6Net::parse_cidr(s).unwrap()
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "weft-subnet-env-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ipv4_env() -> SubnetEnv {
        SubnetEnv {
            network: net4("10.5.0.0/16"),
            subnet: net4("10.5.52.0/24"),
            ipv6: None,
            mtu: 1450,
            ipmasq: false,
        }
    }

    #[test]
    fn render_matches_flanneld() {
        let want = include_str!("../../../../fixtures/flannel/subnet.env");
        assert_eq!(ipv4_env().render(), want);
        assert_eq!(
            ipv4_env().render(),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.52.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        let env = SubnetEnv {
            ipv6: Some((net6("fc00::/48"), net6("fc00:0:0:1::/64"))),
            ..ipv4_env()
        };
        assert_eq!(
            env.render(),
            include_str!("../../../../fixtures/flannel/subnet-dual-stack.env")
        );
        let udp = SubnetEnv {
            network: net4("10.5.0.0/24"),
            subnet: net4("10.5.0.64/26"),
            ipv6: None,
            mtu: 1472,
            ipmasq: true,
        };
        assert_eq!(
            udp.render(),
            "FLANNEL_NETWORK=10.5.0.0/24\nFLANNEL_SUBNET=10.5.0.65/26\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"
        );
    }

    #[test]
    fn write_atomic_creates_the_directory_and_mode_0644() {
        let tmp = TempDir::new("write");
        let path = tmp.0.join("run/flannel/subnet.env");
        ipv4_env().write_atomic(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), ipv4_env().render());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert!(fs::metadata(path.parent().unwrap()).unwrap().is_dir());
        // Replacing an existing file leaves no temporary file behind.
        let env = SubnetEnv {
            mtu: 1400,
            ..ipv4_env()
        };
        env.write_atomic(&path).unwrap();
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("FLANNEL_MTU=1400\n"));
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("subnet.env")]);
        assert_eq!(read_previous(&path), Some((net4("10.5.52.0/24"), None)));
    }

    #[test]
    fn write_atomic_errors_name_the_path() {
        let tmp = TempDir::new("err");
        fs::create_dir_all(&tmp.0).unwrap();
        // A regular file where the directory should be.
        let blocker = tmp.0.join("blocker");
        fs::write(&blocker, b"x").unwrap();
        let path = blocker.join("subnet.env");
        let e = ipv4_env().write_atomic(&path).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("cannot create the directory "), "{text}");
        assert!(text.contains(&blocker.display().to_string()), "{text}");
        // A directory where the file should be: the rename fails and the temp file goes.
        let path = tmp.0.join("isdir");
        fs::create_dir(&path).unwrap();
        let e = ipv4_env().write_atomic(&path).unwrap_err();
        assert!(e.to_string().starts_with("cannot replace "), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()));
        let left: Vec<_> = fs::read_dir(&tmp.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn read_previous_tolerates_junk() {
        let tmp = TempDir::new("read");
        fs::create_dir_all(&tmp.0).unwrap();
        let path = tmp.0.join("subnet.env");
        assert_eq!(read_previous(&path), None, "missing file");

        fs::write(
            &path,
            include_str!("../../../../fixtures/flannel/subnet-dual-stack.env"),
        )
        .unwrap();
        assert_eq!(
            read_previous(&path),
            Some((net4("10.5.52.0/24"), Some(net6("fc00:0:0:1::/64"))))
        );

        type Case = (&'static str, Option<(&'static str, Option<&'static str>)>);
        let cases: &[Case] = &[
            (
                "junk\n=\n==\nFLANNEL_SUBNET\n# c\nexport FLANNEL_SUBNET=\"10.5.9.1/24\"\n",
                Some(("10.5.9.0/24", None)),
            ),
            (
                "FLANNEL_SUBNET=10.5.9.1/24 # comment\nFLANNEL_IPV6_SUBNET=nonsense\n",
                Some(("10.5.9.0/24", None)),
            ),
            (
                "FLANNEL_SUBNET='10.5.9.1/26'\r\nFLANNEL_IPV6_SUBNET=fc00::5/64\r\n",
                Some(("10.5.9.0/26", Some("fc00::/64"))),
            ),
            ("FLANNEL_SUBNET=10.5.9.1/24,10.6.0.1/24\n", None),
            ("FLANNEL_SUBNET=fc00::1/64\n", None),
            ("FLANNEL_SUBNET=10.5.9.1\n", None),
            ("FLANNEL_SUBNET=\"10.5.9.1/24\n", None),
            ("FLANNEL_NETWORK=10.5.0.0/16\n", None),
            ("\u{0}\u{fffd}\u{1}", None),
            ("", None),
        ];
        for (text, want) in cases {
            fs::write(&path, text).unwrap();
            let want = want.map(|(a, b)| (net4(a), b.map(net6)));
            assert_eq!(read_previous(&path), want, "{text:?}");
        }
        fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        assert_eq!(read_previous(&path), None);
        assert_eq!(read_previous(&tmp.0), None, "a directory");
    }
}
