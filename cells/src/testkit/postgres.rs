//! A throwaway PostgreSQL server for tests and benchmarks.
//!
//! [`PgServer::start`] runs `initdb` into a fresh directory under `/tmp` and
//! starts `postgres` on a random loopback port; dropping the [`PgServer`]
//! stops the server and removes the directory. [`PgServer::start_tls`] also
//! turns on TLS with a certificate from a throwaway CA, for `sslmode` tests.
//!
//! Three things shape the code:
//!
//! * **PostgreSQL refuses to run as root**, and CI runs tests as root. When
//!   the effective uid is 0, `initdb` and `postgres` run as the `postgres`
//!   system user (the Debian package creates it), or `nobody` without it. The
//!   directory is then created under `/tmp` (whose parents everyone can
//!   traverse), mode 0700 and owned by that user.
//! * **Statics are never dropped.** Tests share one server through a
//!   `OnceCell` because starting one costs seconds on a slow machine, so
//!   `Drop` alone cannot be trusted to stop it. `postgres` therefore runs
//!   under a tiny `sh` watchdog that holds the read end of a pipe whose
//!   write end only this process has: when this process exits for any
//!   reason (end of the test binary, a panic, SIGKILL) the pipe closes, and
//!   the watchdog stops the server with SIGINT and removes the directory.
//!   `Drop`, when it does run, signals the postmaster directly (SIGINT, then
//!   SIGQUIT, then SIGKILL) and waits for it.
//! * **The port is picked by binding `127.0.0.1:0` and releasing it**, so
//!   another process can take it before `postgres` binds; startup retries
//!   with a fresh port when the log says the address was in use.

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, User};
use tempfile::TempDir;

/// How long a fresh server gets to accept connections; generous because
/// CI machines are slow and shared.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How many fresh ports to try when another process grabs ours.
const PORT_ATTEMPTS: usize = 3;
/// The superuser `initdb` creates.
const SUPERUSER: &str = "sigil_admin";

/// The watchdog (see the module docs). `$0` is the server directory, `$@`
/// the `postgres` command line. fd 3 keeps the pipe from the parent for the
/// reader: asynchronous lists get `/dev/null` as stdin otherwise. The reader
/// leaves a marker before stopping the server, so that only an orphaned
/// server removes its own directory (after an ordinary `Drop`, `TempDir`
/// does, and after a failed start the log must survive to be reported).
const WATCHDOG: &str = r#"
dir="$0"
exec 3<&0
"$@" </dev/null &
pg=$!
(
    read -r _ <&3 || :
    : > "$dir/.orphaned"
    kill -INT "$pg" 2>/dev/null
) &
dog=$!
exec 3<&-
wait "$pg"
status=$?
if [ -e "$dir/.orphaned" ]; then
    rm -rf "$dir"
else
    kill "$dog" 2>/dev/null
fi
exit "$status"
"#;

/// Why a throwaway server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgServerError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "postgresql binaries not found (tried `pg_config --bindir` and /usr/lib/postgresql/*/bin)"
    )]
    BinariesNotFound,
    /// Running as root but neither `postgres` nor `nobody` exists.
    #[error("running as root and no unprivileged user (postgres, nobody) to run postgresql as")]
    NoUnprivilegedUser,
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `initdb` failed; `output` is what it printed.
    #[error("initdb failed: {output}")]
    InitDb { output: String },
    /// The server did not come up; `log` is its log.
    #[error("postgresql did not start: {reason}\n--- server log ---\n{log}")]
    Startup { reason: String, log: String },
    /// Making the TLS certificates failed.
    #[error("generating tls certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> PgServerError {
    move |source| PgServerError::Io { context, source }
}

/// A running throwaway PostgreSQL server; dropping it stops the server and
/// removes its files.
pub struct PgServer {
    /// The watchdog shell; its stdin is the pipe that keeps the server alive.
    watchdog: Option<Child>,
    postmaster: Option<Pid>,
    port: u16,
    password: String,
    ca_pem: Option<String>,
    ca_path: Option<PathBuf>,
    log_path: PathBuf,
    /// Last, so the directory goes after the server has stopped.
    dir: TempDir,
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("superuser", &SUPERUSER)
            .field("dir", &self.dir.path())
            .field("tls", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Who runs `initdb` and `postgres`: `None` for the current user.
type RunAs = Option<(nix::unistd::Uid, nix::unistd::Gid)>;

impl PgServer {
    /// Starts a server that accepts plain TCP connections only.
    pub async fn start() -> Result<PgServer, PgServerError> {
        Self::start_inner(false).await
    }

    /// Starts a server with `ssl=on` and a certificate for `localhost` and
    /// `127.0.0.1` issued by a throwaway CA ([`PgServer::ca_pem`],
    /// [`PgServer::ca_path`]). Plain connections are still accepted, so one
    /// server serves every `sslmode`.
    pub async fn start_tls() -> Result<PgServer, PgServerError> {
        Self::start_inner(true).await
    }

    async fn start_inner(tls: bool) -> Result<PgServer, PgServerError> {
        let bindir = find_bindir().ok_or(PgServerError::BinariesNotFound)?;
        let run_as = unprivileged_user()?;

        let parent = if run_as.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("sigil-pg-")
            .tempdir_in(parent)
            .map_err(io("creating the server directory"))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .map_err(io("setting the server directory's mode"))?;
        give(dir.path(), run_as)?;

        let password = random_hex(16)?;
        init_cluster(&bindir, dir.path(), &password, run_as).await?;

        let (ca_pem, ca_path) = if tls {
            let (pem, path) = write_certificates(dir.path(), run_as)?;
            (Some(pem), Some(path))
        } else {
            (None, None)
        };

        let log_path = dir.path().join("postgres.log");
        let mut server = PgServer {
            watchdog: None,
            postmaster: None,
            port: 0,
            password,
            ca_pem,
            ca_path,
            log_path,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = free_port()?;
            match server.launch(&bindir, run_as, tls).await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let port_taken = server.log().contains("Address already in use");
                    server.stop();
                    if !port_taken || attempt >= PORT_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Spawns the watchdog and postgres and waits until it takes connections.
    async fn launch(
        &mut self,
        bindir: &Path,
        run_as: RunAs,
        tls: bool,
    ) -> Result<(), PgServerError> {
        let data = self.dir.path().join("data");
        self.postmaster = None;
        let log = File::create(&self.log_path).map_err(io("creating the server log"))?;
        let log_err = log
            .try_clone()
            .map_err(io("duplicating the server log handle"))?;

        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg(self.dir.path())
            .arg(bindir.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            // Durability is pointless for a server that lives for one test run.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args(["-c", "shared_buffers=32MB", "-c", "logging_collector=off"]);
        if tls {
            let dir = self.dir.path();
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    dir.join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!("ssl_key_file={}", dir.join("server.key").display()));
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err);
        if let Some((uid, gid)) = run_as {
            std::os::unix::process::CommandExt::uid(&mut cmd, uid.as_raw());
            std::os::unix::process::CommandExt::gid(&mut cmd, gid.as_raw());
        }
        self.watchdog = Some(cmd.spawn().map_err(io("spawning postgres"))?);

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.watchdog.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(PgServerError::Startup {
                    reason: format!("postgres exited with {status}"),
                    log: self.log(),
                });
            }
            if self.postmaster.is_none() {
                self.postmaster = postmaster_pid(&data);
            }
            if self.postmaster.is_some() && self.probe().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PgServerError::Startup {
                    reason: format!("not accepting connections after {STARTUP_TIMEOUT:?}"),
                    log: self.log(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the server accepts a password login right now.
    async fn probe(&self) -> bool {
        let config = self.config();
        let connect = config.connect(tokio_postgres::NoTls);
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok((client, connection))) => {
                drop(client);
                let _ = connection.await;
                true
            }
            _ => false,
        }
    }

    /// The TCP port the server listens on (on 127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's name.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password: random per server, safe to print in tests.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgresql://superuser:password@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!(
            "postgresql://{SUPERUSER}:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    /// The server's URL with Vault's `{{username}}:{{password}}` placeholders
    /// instead of credentials, as a database engine configuration holds it.
    pub fn connection_url_template(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// A `tokio_postgres` configuration for the superuser over plain TCP.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .password(self.password.as_str())
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        config
    }

    /// A superuser client over plain TCP; its connection task runs on the
    /// current tokio runtime, so use it within one test.
    pub async fn client(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.config().connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "test postgres connection ended");
            }
        });
        Ok(client)
    }

    /// The CA certificate (PEM) that issued the server's certificate, when
    /// started with [`PgServer::start_tls`].
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// A file holding [`PgServer::ca_pem`], for `sslrootcert`.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Stops the server and waits for it: SIGINT (fast shutdown: sessions
    /// are terminated, then a clean exit), then SIGQUIT (immediate), then
    /// SIGKILL, each with a grace period.
    fn stop(&mut self) {
        let Some(mut watchdog) = self.watchdog.take() else {
            return;
        };
        let steps = [
            (Signal::SIGINT, Duration::from_secs(10)),
            (Signal::SIGQUIT, Duration::from_secs(5)),
            (Signal::SIGKILL, Duration::from_secs(5)),
        ];
        for (sig, grace) in steps {
            if let Some(pid) = self.postmaster {
                let _ = signal::kill(pid, sig);
            }
            if self.postmaster.is_none() || sig == Signal::SIGKILL {
                let _ = watchdog.kill();
            }
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = watchdog.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = watchdog.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The PostgreSQL server binaries: `pg_config --bindir` when it has
/// `initdb`, else the newest `/usr/lib/postgresql/<version>/bin`.
fn find_bindir() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|p| p.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_initdb(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The user to run PostgreSQL as when we are root.
fn unprivileged_user() -> Result<RunAs, PgServerError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = User::from_name(name) {
            return Ok(Some((user.uid, user.gid)));
        }
    }
    Err(PgServerError::NoUnprivilegedUser)
}

/// Hands `path` to the user PostgreSQL runs as.
fn give(path: &Path, run_as: RunAs) -> Result<(), PgServerError> {
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
            .map_err(io("handing a file to the postgres user"))?;
    }
    Ok(())
}

/// Writes `contents` to a new file only the server's user can read.
fn write_private(path: &Path, contents: &[u8], run_as: RunAs) -> Result<(), PgServerError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating a server file"))?;
    f.write_all(contents).map_err(io("writing a server file"))?;
    give(path, run_as)
}

async fn init_cluster(
    bindir: &Path,
    dir: &Path,
    password: &str,
    run_as: RunAs,
) -> Result<(), PgServerError> {
    let pwfile = dir.join("pwfile");
    write_private(&pwfile, password.as_bytes(), run_as)?;
    let mut cmd = tokio::process::Command::new(bindir.join("initdb"));
    cmd.arg("-D")
        .arg(dir.join("data"))
        .arg("-U")
        .arg(SUPERUSER)
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--auth-host=scram-sha-256", "--auth-local=trust"])
        .args(["-E", "UTF8", "--locale=C", "--no-sync"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    let out = cmd.output().await.map_err(io("running initdb"))?;
    let _ = fs::remove_file(&pwfile);
    if !out.status.success() {
        return Err(PgServerError::InitDb {
            output: format!(
                "{}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// A throwaway CA and a server certificate for `localhost` and 127.0.0.1;
/// returns the CA's PEM and the path of a file holding it.
fn write_certificates(dir: &Path, run_as: RunAs) -> Result<(String, PathBuf), PgServerError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sigil test postgres ca");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = params.signed_by(&server_key, &issuer)?;

    write_private(
        &dir.join("server.crt"),
        server_cert.pem().as_bytes(),
        run_as,
    )?;
    write_private(
        &dir.join("server.key"),
        server_key.serialize_pem().as_bytes(),
        run_as,
    )?;
    let ca_pem = ca_cert.pem();
    let ca_path = dir.join("ca.crt");
    fs::write(&ca_path, ca_pem.as_bytes()).map_err(io("writing the ca certificate"))?;
    Ok((ca_pem, ca_path))
}

/// A loopback port nobody was listening on a moment ago.
fn free_port() -> Result<u16, PgServerError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port();
    Ok(port)
}

/// The postmaster's pid, from the first line of `postmaster.pid`.
fn postmaster_pid(data: &Path) -> Option<Pid> {
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    Some(Pid::from_raw(pid))
}

fn random_hex(bytes: usize) -> Result<String, PgServerError> {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| PgServerError::Random)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_serves_and_cleans_up() {
        let server = PgServer::start().await.unwrap();
        let client = server.client().await.unwrap();
        let row = client
            .query_one("SELECT current_user::text, 40 + 2", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), server.superuser());
        assert_eq!(row.get::<_, i32>(1), 42);
        let row = client.query_one("SHOW max_connections", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "200");

        // A wrong password is refused: host logins really use scram.
        let mut bad = server.config();
        bad.password("wrong");
        assert!(bad.connect(tokio_postgres::NoTls).await.is_err());

        let dir = server.dir.path().to_owned();
        let pid = server.postmaster.unwrap();
        drop(client);
        drop(server);
        assert!(!dir.exists(), "server directory left behind");
        assert!(signal::kill(pid, None).is_err(), "postmaster still running");
    }
}
