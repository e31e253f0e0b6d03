//! A private, throwaway PostgreSQL server for tests and benchmarks: Debian's
//! PostgreSQL binaries, a fresh cluster in a temporary directory, listening
//! on 127.0.0.1 on an ephemeral port (and a socket in that directory), run
//! as an unprivileged user (`postgres` when started as root, as PostgreSQL
//! refuses to run as root).
//!
//! The server lives as long as the process that started it: it runs under a
//! small shell that waits on a pipe from this process and, when the pipe
//! closes (normal exit, panic, or SIGKILL of the test binary), stops the
//! server and deletes the directory. Tests share one server per test binary
//! ([`ThrowawayPostgres::shared`]) and take a fresh database each
//! ([`ThrowawayPostgres::create_database`]).
//!
//! Binaries: `$MRV_PG_BIN`, else the newest `/usr/lib/postgresql/<v>/bin`
//! (Debian's `postgresql` package; `scripts/install-test-deps.sh` installs
//! it).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ThrowawayError {
    /// No PostgreSQL binaries found.
    #[error(
        "no PostgreSQL server binaries (set MRV_PG_BIN or install Debian's postgresql package: scripts/install-test-deps.sh)"
    )]
    NoBinaries,
    /// Running as root without an unprivileged `postgres` user.
    #[error("running as root and there is no 'postgres' user to run the server as")]
    NoUser,
    /// A step failed.
    #[error("{step}: {why}")]
    Step {
        /// What was being done.
        step: String,
        /// Why it failed.
        why: String,
    },
}

fn step(step: &str) -> impl FnOnce(std::io::Error) -> ThrowawayError + '_ {
    move |e| ThrowawayError::Step {
        step: step.to_string(),
        why: e.to_string(),
    }
}

/// How the server is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync = off`: fast, for tests (nothing here must survive a crash
    /// of the machine).
    Off,
    /// PostgreSQL's defaults (`fsync`, `synchronous_commit`): for
    /// benchmarks that measure real commit costs.
    Full,
}

/// A running throwaway server (see the module doc).
#[derive(Debug)]
pub struct ThrowawayPostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    _lifeline: ChildStdin,
    _wrapper: Child,
}

fn bin_dir() -> Result<PathBuf, ThrowawayError> {
    if let Some(p) = std::env::var_os("MRV_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut best: Option<(u32, PathBuf)> = None;
    for e in std::fs::read_dir("/usr/lib/postgresql").map_err(|_| ThrowawayError::NoBinaries)? {
        let Ok(e) = e else { continue };
        let Ok(v) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let bin = e.path().join("bin");
        if bin.join("postgres").exists() && best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, bin));
        }
    }
    best.map(|(_, b)| b).ok_or(ThrowawayError::NoBinaries)
}

/// `(uid, gid)` to run the server as: `None` when already unprivileged.
fn run_as() -> Result<Option<(u32, u32)>, ThrowawayError> {
    let euid = std::fs::metadata("/proc/self")
        .map_err(step("reading /proc/self"))?
        .uid();
    if euid != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(step("reading /etc/passwd"))?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            let uid = f[2].parse().map_err(|_| ThrowawayError::NoUser)?;
            let gid = f[3].parse().map_err(|_| ThrowawayError::NoUser)?;
            return Ok(Some((uid, gid)));
        }
    }
    Err(ThrowawayError::NoUser)
}

fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(program);
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c.env_remove("PGDATA").env("LC_ALL", "C");
    c
}

fn free_port() -> Result<u16, ThrowawayError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(step("picking a port"))?;
    Ok(l.local_addr().map_err(step("picking a port"))?.port())
}

impl ThrowawayPostgres {
    /// Creates a cluster and starts the server.
    pub fn start(durability: Durability) -> Result<ThrowawayPostgres, ThrowawayError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let bin = bin_dir()?;
        let user = run_as()?;
        let tuning: &[&str] = match durability {
            Durability::Off => &[
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            Durability::Full => &[],
        };
        let mut last_err = String::new();
        for _ in 0..5 {
            let dir = std::env::temp_dir().join(format!(
                "mrv-pg-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).map_err(step("creating the directory"))?;
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                    .map_err(step("handing the directory to postgres"))?;
            }
            let data = dir.join("data");
            let out = command(&bin.join("initdb"), user)
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "mrv",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .map_err(step("running initdb"))?;
            if !out.status.success() {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ThrowawayError::Step {
                    step: String::from("initdb"),
                    why: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            let port = free_port()?;
            // The lifeline: when this process's end of stdin closes, the
            // shell stops the server and removes the directory. (A
            // background job's stdin is /dev/null in sh, hence fd 3.)
            let script = r#"
dir="$1"; port="$2"; shift 2
exec 3<&0
"$0/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
    -c max_connections=300 -c shared_buffers=128MB "$@" &
pid=$!
(read _ignored <&3; kill -INT "$pid") 2>/dev/null &
wait "$pid"
rm -rf "$dir"
"#;
            let mut wrapper = command(Path::new("/bin/sh"), user)
                .arg("-c")
                .arg(script)
                .arg(&bin)
                .arg(&dir)
                .arg(port.to_string())
                .args(tuning)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(step("starting postgres"))?;
            let lifeline = wrapper.stdin.take().expect("piped");
            let stderr = wrapper.stderr.take().expect("piped");
            let mut lines = BufReader::new(stderr).lines();
            let mut ready = false;
            let mut log = String::new();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                log.push_str(&line);
                log.push('\n');
                if line.contains("ready to accept connections") {
                    ready = true;
                    break;
                }
            }
            if ready {
                // Keep draining the server's log so it never blocks on it.
                std::thread::spawn(move || {
                    let show = std::env::var_os("MRV_PG_LOG").is_some();
                    for line in lines.map_while(Result::ok) {
                        if show {
                            eprintln!("postgres: {line}");
                        }
                    }
                });
                return Ok(ThrowawayPostgres {
                    port,
                    dir,
                    bin,
                    _lifeline: lifeline,
                    _wrapper: wrapper,
                });
            }
            // The server exited (its log says why); the shell has cleaned up.
            drop(lifeline);
            let _ = wrapper.wait();
            last_err = log;
        }
        Err(ThrowawayError::Step {
            step: String::from("starting postgres"),
            why: last_err,
        })
    }

    /// The server this test binary shares (started on first use, with
    /// [`Durability::Off`]).
    pub fn shared() -> &'static ThrowawayPostgres {
        static SHARED: OnceLock<ThrowawayPostgres> = OnceLock::new();
        SHARED.get_or_init(|| {
            ThrowawayPostgres::start(Durability::Off)
                .unwrap_or_else(|e| panic!("cannot start a throwaway PostgreSQL: {e}"))
        })
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the PostgreSQL binaries used.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Connection string for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user=mrv dbname={db}", self.port)
    }

    /// Creates database `name` (letters, digits, `_`) and returns its
    /// connection string.
    pub async fn create_database(&self, name: &str) -> Result<String, ThrowawayError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ThrowawayError::Step {
                step: String::from("create database"),
                why: format!("{name:?} is not a plain identifier"),
            });
        }
        let fail = |e: tokio_postgres::Error| ThrowawayError::Step {
            step: format!("create database {name}"),
            why: e.to_string(),
        };
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .map_err(fail)?;
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(fail)?;
        drop(client);
        let _ = task.await;
        Ok(self.url(name))
    }
}

/// A fresh database on the shared server, named after `prefix` and a
/// counter.
pub async fn fresh_database(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!("{prefix}_{}", N.fetch_add(1, Ordering::Relaxed));
    ThrowawayPostgres::shared()
        .create_database(&name)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
