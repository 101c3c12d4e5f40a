//! A private `/etc/hosts` for one process, via a mount namespace (`unshare --mount` + a bind mount).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::EgressError;

/// How the mount namespace is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnshareMode {
    /// `unshare --mount` (root or CAP_SYS_ADMIN).
    Mount,
    /// `unshare --user --map-root-user --mount` (unprivileged user namespaces; the process sees itself as root).
    UserAndMount,
}

impl UnshareMode {
    fn args(self) -> &'static [&'static str] {
        match self {
            UnshareMode::Mount => &["--mount"],
            UnshareMode::UserAndMount => &["--user", "--map-root-user", "--mount"],
        }
    }
}

/// Names mapped to loopback addresses for the processes wrapped by [`PrivateHosts::wrap`].
///
/// The hosts file lives as long as this value; a running process keeps its bind mount even after that.
/// `unshare` makes the new namespace's mounts private, so the machine's own `/etc/hosts` is never touched.
#[derive(Debug)]
pub struct PrivateHosts {
    entries: Vec<(String, IpAddr)>,
    mode: UnshareMode,
    _dir: crate::lifecycle::TrackedDir,
    file: PathBuf,
    /// More `(source, target)` bind mounts made in the namespace (targets that do not exist are skipped).
    extra_binds: Vec<(PathBuf, PathBuf)>,
    /// The wrapped process starts with an empty environment plus what the command sets explicitly.
    clear_env: bool,
}

impl PrivateHosts {
    /// Writes a hosts file: the given entries first (so they win), then the machine's `/etc/hosts` without any
    /// line naming one of them. Fails with [`EgressError::UnshareNotPermitted`] when no mount namespace can be
    /// made here, so callers learn it before starting anything.
    pub fn new<N: Into<String>>(
        entries: impl IntoIterator<Item = (N, IpAddr)>,
    ) -> Result<Self, EgressError> {
        let entries: Vec<(String, IpAddr)> = entries
            .into_iter()
            .map(|(n, ip)| (n.into().to_ascii_lowercase(), ip))
            .collect();
        for (name, _) in &entries {
            if !is_host_name(name) {
                return Err(EgressError::BadHostName { name: name.clone() });
            }
        }
        let mode = unshare_mode()?;
        let dir = crate::lifecycle::TrackedDir::new("keda-harness-hosts-").map_err(|e| {
            EgressError::WriteHosts {
                path: std::env::temp_dir(),
                source: std::io::Error::other(e),
            }
        })?;
        let file = dir.path().join("hosts");
        let machine_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        std::fs::write(&file, render_hosts(&entries, &machine_hosts)).map_err(|source| {
            EgressError::WriteHosts {
                path: file.clone(),
                source,
            }
        })?;
        Ok(PrivateHosts {
            entries,
            mode,
            _dir: dir,
            file,
            extra_binds: Vec::new(),
            clear_env: false,
        })
    }

    /// Seal what the wrapped process can learn from the machine: `/etc/resolv.conf` names a closed loopback
    /// port (no name resolves except those in the private hosts file), the files in the user's home that
    /// PostgreSQL, Azure and Kubernetes clients read on their own (`.pgpass`, `.pg_service.conf`,
    /// `.postgresql/`, `.azure/`, `.kube/`; pgx finds `.pgpass` through the passwd entry, not `$HOME`) are
    /// covered by empty ones, `/bin/sh` does not exist (see [`shell_shadow`]), and — with `clear_env` — the
    /// environment is only what the command sets.
    pub fn sealed(mut self, clear_env: bool) -> Result<Self, EgressError> {
        let dir = self._dir.path().to_path_buf();
        let write = |name: &str, body: &str| -> Result<PathBuf, EgressError> {
            let path = dir.join(name);
            std::fs::write(&path, body).map_err(|source| EgressError::WriteHosts {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        };
        // Port 53 of 127.0.0.1 is closed in the sealed network namespace: every lookup fails at once.
        let resolv = write(
            "resolv.conf",
            "# keda-harness: no resolver (names come from the private /etc/hosts only)\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )?;
        self.extra_binds
            .push((resolv, PathBuf::from("/etc/resolv.conf")));
        let empty_file = write("empty", "")?;
        let empty_dir = dir.join("empty.d");
        std::fs::create_dir_all(&empty_dir).map_err(|source| EgressError::WriteHosts {
            path: empty_dir.clone(),
            source,
        })?;
        if let Some(home) = passwd_home() {
            for name in [".pgpass", ".pg_service.conf"] {
                let target = home.join(name);
                if target.is_file() {
                    self.extra_binds.push((empty_file.clone(), target));
                }
            }
            for name in [".postgresql", ".azure", ".kube"] {
                let target = home.join(name);
                if target.is_dir() {
                    self.extra_binds.push((empty_dir.clone(), target));
                }
            }
        }
        // Last, so every earlier `mount` still runs from the real directory (it keeps working afterwards too,
        // through the shadow's links).
        if let Some(binds) = shell_shadow(&dir)? {
            self.extra_binds.extend(binds);
        }
        self.clear_env = clear_env;
        Ok(self)
    }

    pub fn entries(&self) -> &[(String, IpAddr)] {
        &self.entries
    }

    /// The file bind-mounted over `/etc/hosts` in wrapped processes.
    pub fn hosts_file(&self) -> &Path {
        &self.file
    }

    pub fn mode(&self) -> UnshareMode {
        self.mode
    }

    /// A command that runs `cmd` (program, arguments, environment changes, working directory) inside a new
    /// mount namespace whose `/etc/hosts` is [`hosts_file`](Self::hosts_file). Set stdio on the result: it
    /// cannot be copied from `cmd`. `cmd.env_clear()` is not visible through `std::process::Command` and is
    /// therefore not carried over.
    pub fn wrap(&self, cmd: &Command) -> Command {
        // Absolute paths: `cmd` may carry its own PATH (the KEDA operator's names no folder at all), and Rust
        // looks a program up in the child's PATH when the command changes it.
        let unshare = tool_path("unshare");
        let mount = tool_path("mount");
        let mut wrapped = Command::new(unshare);
        wrapped.args(self.mode.args());
        // `$1` is mount, `$2` the number of (source, target) pairs that follow (the hosts file first); the rest is
        // the real command, exec'd so signals and exit status are its own.
        wrapped.args([
            "--",
            "/bin/sh",
            "-c",
            r#"m="$1"; n="$2"; shift 2; while [ "$n" -gt 0 ]; do "$m" --bind "$1" "$2" || exit 111; shift 2; n=$((n-1)); done; exec "$@""#,
            "keda-harness-private-hosts",
        ]);
        wrapped.arg(mount);
        wrapped.arg((1 + self.extra_binds.len()).to_string());
        wrapped.arg(&self.file).arg("/etc/hosts");
        for (source, target) in &self.extra_binds {
            wrapped.arg(source).arg(target);
        }
        if self.clear_env {
            wrapped.env_clear();
        }
        wrapped.arg(cmd.get_program());
        wrapped.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }
}

/// Bind mounts that make `/bin/sh` not exist for the wrapped process while every other program in its
/// directory still runs: KEDA prepends AzureCLICredential to its credential chain whenever
/// `os.Stat("/bin/sh")` succeeds (pkg/scalers/azure/azure_azidentity_chain.go, same check in v2.15.0 and
/// v2.20.2), and its release images are distroless, so on AKS the chain is workload identity alone. With a
/// shell the host operator's errors gain an AzureCLICredential line (or stop at a failing `az`).
///
/// A bind mount cannot remove one file, and hiding the whole directory would also hide what wrapped programs
/// need (on Debian 12 `/bin` is a link to `usr/bin`, where python3 lives). So: the real directory is
/// bind-mounted onto `<dir>/real-bin` inside the namespace, and `<dir>/shadow-bin` — a link
/// `NAME -> <dir>/real-bin/NAME` for every entry but `sh` — is bind-mounted over it. `mount` follows the
/// `/bin` link, so the shadow covers `/usr/bin` there. `None` when this machine has no `/bin/sh`.
fn shell_shadow(dir: &Path) -> Result<Option<[(PathBuf, PathBuf); 2]>, EgressError> {
    let sh = Path::new("/bin/sh");
    if std::fs::metadata(sh).is_err() {
        return Ok(None);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EgressError::WriteHosts { path, source }
    };
    let bin_dir = std::fs::canonicalize("/bin").map_err(io(Path::new("/bin")))?;
    let real = dir.join("real-bin");
    let shadow = dir.join("shadow-bin");
    std::fs::create_dir_all(&real).map_err(io(&real))?;
    std::fs::create_dir_all(&shadow).map_err(io(&shadow))?;
    for entry in std::fs::read_dir(&bin_dir).map_err(io(&bin_dir))? {
        let name = entry.map_err(io(&bin_dir))?.file_name();
        if name == "sh" {
            continue;
        }
        let link = shadow.join(&name);
        std::os::unix::fs::symlink(real.join(&name), &link).map_err(io(&link))?;
    }
    Ok(Some([(bin_dir.clone(), real), (shadow, bin_dir)]))
}

/// This user's home directory as the passwd database says (what Go's `user.Current()` returns, which pgx
/// uses for `.pgpass`), not `$HOME`.
fn passwd_home() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 5 && f[2].parse::<u32>().ok() == Some(uid) && f[5] != "/")
            .then(|| PathBuf::from(f[5]))
    })
}

/// `name` as found on this process's PATH (falling back to /usr/bin/NAME).
fn tool_path(name: &str) -> PathBuf {
    crate::prereq::which(name).unwrap_or_else(|| Path::new("/usr/bin").join(name))
}

fn render_hosts(entries: &[(String, IpAddr)], machine_hosts: &str) -> String {
    let mut out =
        String::from("# keda-harness private /etc/hosts (mount namespace of one process)\n");
    for (name, ip) in entries {
        let _ = writeln!(out, "{ip}\t{name}");
    }
    out.push_str("# the machine's /etc/hosts, without the names above\n");
    for line in machine_hosts.lines() {
        let names_a_mapped_host = line
            .split('#')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .any(|n| entries.iter().any(|(e, _)| e.eq_ignore_ascii_case(n)));
        if !names_a_mapped_host {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Probes once per process which `unshare` form works here.
/// Find out, once per process, how this user may make mount namespaces (the probe starts `unshare`, which can
/// take most of a second): for callers that want it done on a blocking thread ahead of [`PrivateHosts::new`].
pub fn probe_unshare() {
    let _ = unshare_mode();
}

fn unshare_mode() -> Result<UnshareMode, EgressError> {
    static MODE: OnceLock<Result<UnshareMode, String>> = OnceLock::new();
    MODE.get_or_init(|| {
        let mut failures = Vec::new();
        for mode in [UnshareMode::Mount, UnshareMode::UserAndMount] {
            let out = Command::new("unshare")
                .args(mode.args())
                .args(["--", "/bin/sh", "-c", "mount --bind /etc/hosts /etc/hosts"])
                .output();
            match out {
                Ok(o) if o.status.success() => return Ok(mode),
                Ok(o) => failures.push(format!(
                    "`unshare {}` + bind mount: {} {}",
                    mode.args().join(" "),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => {
                    failures.push(format!("cannot run `unshare` (util-linux): {e}"));
                    break;
                }
            }
        }
        Err(failures.join("; "))
    })
    .clone()
    .map_err(|detail| EgressError::UnshareNotPermitted { detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_names_come_first_and_shadowing_machine_lines_are_dropped() {
        let entries = vec![(
            "postgres.postgres.database.azure.com".to_string(),
            "127.0.0.23".parse().unwrap(),
        )];
        let machine = "127.0.0.1\tlocalhost\n10.0.0.9 postgres.postgres.database.azure.com other\n";
        let rendered = render_hosts(&entries, machine);
        let first_mapping = rendered.lines().find(|l| !l.starts_with('#')).unwrap();
        assert_eq!(
            first_mapping,
            "127.0.0.23\tpostgres.postgres.database.azure.com"
        );
        assert!(rendered.contains("127.0.0.1\tlocalhost"));
        assert!(!rendered.contains("10.0.0.9"));
    }

    #[test]
    fn host_names_are_validated() {
        assert!(is_host_name("login.microsoftonline.com"));
        assert!(!is_host_name("bad name"));
        assert!(!is_host_name("a..b"));
        assert!(matches!(
            PrivateHosts::new([("bad/name", "127.0.0.1".parse().unwrap())]),
            Err(EgressError::BadHostName { .. })
        ));
    }

    /// What KEDA checks (`os.Stat("/bin/sh")`, following links) fails in a sealed wrapped process, other
    /// programs of the same directory still run there, and an unsealed one (and the machine) keeps its shell.
    #[test]
    fn a_sealed_process_sees_no_bin_sh_and_still_runs_other_programs() {
        if std::fs::metadata("/bin/sh").is_err() {
            eprintln!("SKIPPED: this machine has no /bin/sh to hide");
            return;
        }
        let plain = match PrivateHosts::new([(
            "keda-harness-test.invalid",
            "127.0.0.9".parse().unwrap(),
        )]) {
            Ok(h) => h,
            Err(e @ EgressError::UnshareNotPermitted { .. }) => {
                eprintln!("SKIPPED: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let mut stat = Command::new("stat");
        stat.args(["-L", "-c", "%n is here", "/bin/sh"]);
        let out = plain.wrap(&stat).output().unwrap();
        assert!(out.status.success(), "unsealed: {out:?}");

        let sealed =
            PrivateHosts::new([("keda-harness-test.invalid", "127.0.0.9".parse().unwrap())])
                .unwrap()
                .sealed(false)
                .unwrap();
        // `stat` itself is found on PATH (through the shadow's link) and reports /bin/sh missing.
        let out = sealed.wrap(&stat).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            stderr.contains("/bin/sh") && stderr.contains("No such file or directory"),
            "{stderr}"
        );
        // The same directory's other programs still run, by /bin and by /usr/bin.
        let mut ls = Command::new("/bin/ls");
        ls.arg("/usr/bin/env");
        let out = sealed.wrap(&ls).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        // And the names still resolve as the private hosts file says (the shadow comes after the other mounts).
        let mut getent = Command::new("getent");
        getent.args(["hosts", "keda-harness-test.invalid"]);
        let out = sealed.wrap(&getent).output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("127.0.0.9 "),
            "{out:?}"
        );
        // The machine keeps its shell.
        assert!(std::fs::metadata("/bin/sh").is_ok());
    }

    #[test]
    fn a_wrapped_process_resolves_the_private_names_and_the_machine_does_not() {
        let hosts = match PrivateHosts::new([(
            "postgres.postgres.database.azure.com",
            "127.0.0.23".parse().unwrap(),
        )]) {
            Ok(h) => h,
            Err(e @ EgressError::UnshareNotPermitted { .. }) => {
                // Not root and no user namespaces: the error must say what to do.
                let msg = e.to_string();
                assert!(msg.contains("run as root"), "{msg}");
                eprintln!("SKIPPED: {msg}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let mut cmd = Command::new("getent");
        cmd.args(["hosts", "postgres.postgres.database.azure.com"]);
        let out = hosts.wrap(&cmd).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        assert!(line.starts_with("127.0.0.23 "), "{line}");
        // The bind mount stayed inside the child's namespace.
        let machine = std::fs::read_to_string("/etc/hosts").unwrap();
        assert!(!machine.contains("127.0.0.23\tpostgres.postgres.database.azure.com"));
    }
}
