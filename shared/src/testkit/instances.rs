//! Server instances of a test's own — PostgreSQL, RabbitMQ, Redis — each on a free port with its
//! data in a temporary directory, so a test can stop and restart a real server (not just cut a
//! proxy) without disturbing the shared services other tests use.
//!
//! - Every server runs in its own process group: a stop or kill reaches the helpers it forks
//!   (Erlang's `erl_child_setup`, the `rabbitmq-server` wrapper script) and nothing else.
//! - `stop()` then `start()` brings the server back on the same port with the same data, as an
//!   operator's restart would; `Drop` kills what is left and removes the directory, also when
//!   the test panics.
//! - A missing server binary fails the test with a message naming the package
//!   (`scripts/services.sh` installs them): a fault test that silently passes proves nothing.
//!
//! Start-up cost measured on the 2-core CI machine: Postgres `initdb` about 1.2 s and a start
//! about 0.2 s; a RabbitMQ 3.10 node about 6.5 s per start (also on restart) and about 3 s to stop
//! gracefully; Redis a few milliseconds. Tests should keep RabbitMQ starts to two or three.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};
use tokio::process::{Child, Command};

/// How long a server may take to accept clients before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the process group is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A free TCP port on 127.0.0.1: bound, read and released. The kernel does not hand a just
/// released ephemeral port out again soon, which is as good as a test on a shared box can get.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// The first of `candidates` that exists, else a test failure naming what installs it.
fn require_binary(what: &str, candidates: &[PathBuf], package: &str) -> PathBuf {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{what} not found (looked for {candidates:?}); this fault test needs it: run \
                 scripts/services.sh or `apt-get install {package}`"
            )
        })
}

/// `name` in one of the directories of `PATH`.
fn on_path(name: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default()
}

/// A fresh directory under the system temp dir, named after the server and the test's tag.
fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-{kind}-{}", super::unique_tag()));
    fs::create_dir_all(&dir).expect("creating the instance's temp dir");
    dir
}

/// The last lines of a server's log, for a failure message that says why it did not come up.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn log_file(path: &Path) -> (Stdio, Stdio) {
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("opening the instance's log");
    let g = f.try_clone().expect("cloning the log handle");
    (Stdio::from(f), Stdio::from(g))
}

/// Sends `signal` to a whole process group; false when no process of the group is left. The
/// `kill` binary (procps) keeps `unsafe` out of the workspace; the other tests signal processes
/// the same way.
fn signal_group(pgid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([format!("-{signal}"), "--".into(), format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether any process of the group is still alive (signal 0 only checks).
fn group_alive(pgid: u32) -> bool {
    signal_group(pgid, "0")
}

/// One running server process, leader of its own process group.
struct Running {
    child: Child,
    pgid: u32,
}

impl Running {
    fn spawn(mut cmd: Command, what: &str, log: &Path) -> Self {
        let (out, err) = log_file(log);
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let pgid = child.id().expect("a just spawned child has a pid");
        Running { child, pgid }
    }

    /// Signals the group and waits for it to be gone (the leader first, then the helpers that
    /// got the signal with it: Erlang's port programs); kills the group after `STOP_GRACE`.
    /// A group id cannot be reused while any member lives, so only our processes are signalled.
    async fn stop(mut self, signal: &str) {
        signal_group(self.pgid, signal);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        let exited = tokio::time::timeout_at(deadline, self.child.wait()).await;
        while exited.is_ok() && group_alive(self.pgid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if exited.is_err() || group_alive(self.pgid) {
            tracing::warn!(pgid = self.pgid, "Server did not stop in time; killing it.");
            signal_group(self.pgid, "KILL");
            let _ = self.child.wait().await;
        }
    }

    /// For `Drop`, where nothing can be awaited: `signal`, up to 5 s for the whole group to be
    /// gone, then SIGKILL to what is left.
    fn kill_blocking(&mut self, signal: &str) {
        signal_group(self.pgid, signal);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let _ = self.child.try_wait(); // reap the leader, so the group can empty
            if !group_alive(self.pgid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(self.pgid, "KILL");
        let _ = self.child.try_wait();
    }

    /// Fails the test when the server exited instead of coming up.
    fn assert_alive(&mut self, what: &str, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{what} exited with {status} while starting:\n{}",
                log_tail(log)
            );
        }
    }
}

/// Polls `ready` until it holds; fails the test with the server's log if it never does. Each
/// probe gets `PROBE_TIMEOUT`, so one that hangs cannot hang the test.
async fn wait_ready<F, Fut>(what: &str, log: &Path, server: &mut Running, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while !tokio::time::timeout(PROBE_TIMEOUT, ready())
        .await
        .unwrap_or(false)
    {
        server.assert_alive(what, log);
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not accept clients within {READY_TIMEOUT:?}:\n{}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The uid and gid of `user` from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != user {
            return None;
        }
        let (uid, gid) = (f.nth(1)?, f.next()?);
        Some((uid.parse().ok()?, gid.parse().ok()?))
    })
}

/// Whether this process runs as root: /proc/self belongs to the process's effective uid.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

// --- PostgreSQL ----------------------------------------------------------------------------------

/// A PostgreSQL cluster of the test's own: `initdb` into a temp dir, the server on a free port
/// with its socket in that dir and `fsync=off` (a test's data need not survive a power cut).
///
/// Postgres refuses to run as root, and CI runs tests as root: then the cluster belongs to the
/// `postgres` OS user (set as the child's uid/gid, no `runuser` in between to forward signals).
pub struct OwnPostgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    /// The tmpfs holding the data directory, when there is one.
    mount: Option<PathBuf>,
    server: Option<Running>,
}

/// Mounts a tmpfs of `mb` MiB at `at`, owned by `owner` (the postgres user when root).
fn mount_tmpfs(at: &Path, mb: u32, owner: Option<(u32, u32)>) -> PathBuf {
    fs::create_dir_all(at).expect("creating the mount point");
    let mut opts = format!("size={mb}m,mode=0700");
    if let Some((uid, gid)) = owner {
        opts.push_str(&format!(",uid={uid},gid={gid}"));
    }
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts, "faultline-test"])
        .arg(at)
        .output()
        .unwrap_or_else(|e| panic!("running mount: {e}"));
    assert!(
        out.status.success(),
        "mounting a {mb} MiB tmpfs for the disk-full test failed (needs root with CAP_SYS_ADMIN, \
         as in CI): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    at.to_path_buf()
}

/// Where `fill_disk` puts its filler.
const FILLER: &str = "filler";

impl OwnPostgres {
    /// The temp dir holding the server's data and log; removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the cluster and starts it; returns once it accepts connections.
    pub async fn new() -> Self {
        Self::create(None).await
    }

    /// Like [`new`](Self::new), with the data directory on a tmpfs of `size_mb` mounted for this
    /// instance, so that [`fill_disk`](Self::fill_disk) can make Postgres run out of space
    /// without touching the machine's disks. Mounting needs root with CAP_SYS_ADMIN (as in CI);
    /// without it the test fails, saying so. The mount is removed on drop.
    pub async fn new_on_tmpfs(size_mb: u32) -> Self {
        Self::create(Some(size_mb)).await
    }

    async fn create(tmpfs_mb: Option<u32>) -> Self {
        let bin = Self::bin_dir();
        let dir = temp_dir("pg");
        let owner = if running_as_root() {
            let ids = user_ids("postgres").expect(
                "running as root, Postgres needs the `postgres` OS user: run scripts/services.sh",
            );
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1))
                .expect("handing the temp dir to the postgres user");
            Some(ids)
        } else {
            None
        };
        let mount = tmpfs_mb.map(|mb| mount_tmpfs(&dir.join("fs"), mb, owner));
        let mut pg = OwnPostgres {
            dir,
            port: free_port(),
            bin,
            owner,
            mount,
            server: None,
        };
        let mut initdb = pg.command("initdb");
        initdb.args(["-D"]).arg(pg.data_dir()).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let log = pg.log_path();
        let (out, err) = log_file(&log);
        let status = initdb
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .await
            .expect("running initdb");
        assert!(status.success(), "initdb failed:\n{}", log_tail(&log));
        pg.start().await;
        pg
    }

    /// `$PG_BIN_DIR`, else the newest /usr/lib/postgresql/*/bin holding `postgres`.
    fn bin_dir() -> PathBuf {
        let mut candidates = Vec::new();
        if let Some(d) = std::env::var_os("PG_BIN_DIR") {
            candidates.push(PathBuf::from(d).join("postgres"));
        }
        let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path().join("bin/postgres"))
                    .collect()
            })
            .unwrap_or_default();
        versions.sort_by_key(|p| {
            p.components()
                .nth(4)
                .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        });
        candidates.extend(versions.into_iter().rev());
        candidates.extend(on_path("postgres"));
        let postgres = require_binary("the postgres server binary", &candidates, "postgresql");
        postgres
            .parent()
            .expect("a binary lives in a directory")
            .to_path_buf()
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir);
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    pub fn data_dir(&self) -> PathBuf {
        self.mount.as_deref().unwrap_or(&self.dir).join("data")
    }

    /// Fills the instance's tmpfs to the last byte, as a runaway log or a big import would:
    /// from now on Postgres cannot extend a table (SQLSTATE 53100, disk_full). Returns the bytes
    /// written. Only for [`new_on_tmpfs`](Self::new_on_tmpfs) instances.
    pub fn fill_disk(&self) -> u64 {
        use std::io::Write;
        let mount = self.mount.as_ref().expect("fill_disk needs new_on_tmpfs");
        let mut f = fs::File::create(mount.join(FILLER)).expect("creating the filler");
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        // Down to single bytes, so not even a page is left.
        for size in [chunk.len(), 4096, 1] {
            while f.write_all(&chunk[..size]).is_ok() {
                written += size as u64;
            }
        }
        written
    }

    /// Removes the filler: Postgres has room again.
    pub fn free_disk(&self) {
        let mount = self.mount.as_ref().expect("free_disk needs new_on_tmpfs");
        fs::remove_file(mount.join(FILLER)).expect("removing the filler");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `postgres` maintenance database as superuser (trust auth ignores the password).
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Starts the server (again) on the same port and data dir; returns once it accepts
    /// connections. A no-op when it runs.
    pub async fn start(&mut self) {
        if self.server.is_some() {
            return;
        }
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=50",
            ]);
        let log = self.log_path();
        let mut server = Running::spawn(cmd, "postgres", &log);
        let url = self.url();
        wait_ready("own postgres", &log, &mut server, || {
            let url = url.clone();
            async move {
                use sqlx::Connection;
                match sqlx::PgConnection::connect(&url).await {
                    Ok(c) => {
                        let _ = c.close().await;
                        true
                    }
                    Err(_) => false,
                }
            }
        })
        .await;
        self.server = Some(server);
    }

    /// Fast shutdown (SIGINT): sessions are ended, the port closes, the data stays.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop("INT").await;
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // Immediate shutdown: the postmaster takes its backends (each in its own session)
            // down with it, which a SIGKILL of its group alone would not do at once.
            server.kill_blocking("QUIT");
        }
        if let Some(mount) = &self.mount {
            // Lazy: detaches at once even if a straggling backend still has a file open.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(mount)
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// --- RabbitMQ ------------------------------------------------------------------------------------

/// A RabbitMQ node of the test's own: node name `test-<tag>@localhost`, AMQP and distribution on
/// free ports, mnesia, logs and plugins in a temp dir, no plugins, and `HOME` in that dir so the
/// node makes its own Erlang cookie instead of reading (or writing) the shared node's.
///
/// It runs the script under /usr/lib/rabbitmq/bin directly: Debian's /usr/sbin wrapper switches to
/// the `rabbitmq` user with `su`, which resets `HOME` and so would share the system cookie. The
/// node registers its name with the machine's epmd (port 4369) like any other Erlang node and
/// unregisters when it stops; if no epmd runs yet, the node starts one (on loopback), which
/// stays, as it does for any Erlang node.
pub struct OwnRabbit {
    dir: PathBuf,
    port: u16,
    dist_port: u16,
    node: String,
    script: PathBuf,
    server: Option<Running>,
}

impl OwnRabbit {
    /// The temp dir holding the server's data and log; removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a fresh node; returns once it accepts AMQP connections (about 6.5 s here).
    pub async fn new() -> Self {
        let mut candidates = vec![PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server")];
        if let Ok(rd) = fs::read_dir("/usr/lib/rabbitmq/lib") {
            candidates.extend(rd.flatten().map(|e| e.path().join("sbin/rabbitmq-server")));
        }
        let script = require_binary("the rabbitmq-server script", &candidates, "rabbitmq-server");
        let dir = temp_dir("rabbit");
        // Empty: nothing from /etc/rabbitmq/rabbitmq-env.conf (the shared node's name).
        fs::write(dir.join("rabbitmq-env.conf"), "").expect("writing rabbitmq-env.conf");
        // An Erlang term: no plugins, so nothing listens beyond the AMQP port.
        fs::write(dir.join("enabled_plugins"), "[].\n").expect("writing enabled_plugins");
        let port = free_port();
        let dist_port = std::iter::repeat_with(free_port)
            .find(|&p| p != port)
            .expect("an endless iterator finds one");
        let mut rabbit = OwnRabbit {
            node: format!("test-{}@localhost", super::unique_tag()),
            dir,
            port,
            dist_port,
            script,
            server: None,
        };
        rabbit.start().await;
        rabbit
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The default vhost as `guest` (allowed from loopback).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("rabbitmq-server.log")
    }

    /// Starts the node (again) with the same name, ports and mnesia dir, so durable queues and
    /// persistent messages come back; returns once it accepts AMQP connections.
    pub async fn start(&mut self) {
        if self.server.is_some() {
            return;
        }
        let d = &self.dir;
        let mut cmd = Command::new(&self.script);
        cmd.current_dir(d)
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", d.join("plugins"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            // Only if no epmd runs yet: the one the node starts listens on loopback only.
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env_remove("ERL_FLAGS")
            .env_remove("RABBITMQ_CONFIG_FILES");
        let log = self.log_path();
        let mut server = Running::spawn(cmd, "rabbitmq-server", &log);
        let url = self.url();
        wait_ready("own rabbitmq", &log, &mut server, || {
            let url = url.clone();
            async move {
                match crate::queue::connect(&url, "faultline-test-probe").await {
                    Ok(c) => {
                        let _ = c.close(200, "ready".into()).await;
                        true
                    }
                    Err(_) => false,
                }
            }
        })
        .await;
        self.server = Some(server);
    }

    /// Graceful stop (SIGTERM, as `docker stop` or systemd would send): connections are closed,
    /// unacked messages go back to their queues, durable state is kept.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop("TERM").await;
        }
    }

    /// Freezes the node (SIGSTOP to it and its helpers): connections stay open, but nothing is
    /// read, routed or confirmed until [`OwnRabbit::resume`], as in a long stall of the node or
    /// its disk. Dropping a frozen node still kills it.
    pub fn pause(&self) {
        if let Some(server) = &self.server {
            signal_group(server.pgid, "STOP");
        }
    }

    /// Lets a node frozen by [`OwnRabbit::pause`] run again.
    pub fn resume(&self) {
        if let Some(server) = &self.server {
            signal_group(server.pgid, "CONT");
        }
    }

    /// A crash: SIGKILL to the node and its helpers, nothing flushed beyond what was confirmed.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop("KILL").await;
        }
    }

    /// Runs `rabbitmqctl` against this node (its name, its cookie), e.g.
    /// `set_vm_memory_high_watermark 0.000001` to raise a memory alarm; panics if it fails.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let mut cmd = std::process::Command::new(self.script.with_file_name("rabbitmqctl"));
        cmd.current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .arg("-n")
            .arg(&self.node)
            .args(args);
        let what = format!("rabbitmqctl {}", args.join(" "));
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("rabbitmqctl task")
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for OwnRabbit {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill_blocking("KILL");
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// --- Redis ---------------------------------------------------------------------------------------

/// A Redis server of the test's own, without persistence (a restart starts empty, as a cache
/// may): enough to show what ingest does while its Redis is gone and after it is back.
pub struct OwnRedis {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    server: Option<Running>,
}

impl OwnRedis {
    /// The temp dir holding the server's data and log; removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the server; returns once it answers PING.
    pub async fn new() -> Self {
        let mut candidates = on_path("redis-server");
        candidates.push(PathBuf::from("/usr/bin/redis-server"));
        let bin = require_binary("redis-server", &candidates, "redis-server");
        let mut redis = OwnRedis {
            dir: temp_dir("redis"),
            port: free_port(),
            bin,
            server: None,
        };
        redis.start().await;
        redis
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port.
    pub async fn start(&mut self) {
        if self.server.is_some() {
            return;
        }
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(&self.dir);
        let log = self.dir.join("redis.log");
        let mut server = Running::spawn(cmd, "redis-server", &log);
        let url = self.url();
        wait_ready("own redis", &log, &mut server, || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            }
        })
        .await;
        self.server = Some(server);
    }

    /// Stops the server at once (SIGKILL): what clients see when Redis dies.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop("KILL").await;
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill_blocking("KILL");
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "scripts/services.sh")]
    fn a_missing_server_binary_fails_the_test_instead_of_skipping_it() {
        require_binary(
            "a server",
            &[PathBuf::from("/nonexistent/faultline/server")],
            "server-package",
        );
    }

    #[test]
    fn the_postgres_users_ids_are_read_from_passwd_when_it_exists() {
        if let Some((uid, _)) = user_ids("root") {
            assert_eq!(uid, 0);
        }
        assert_eq!(user_ids("no-such-user-faultline"), None);
    }
}
