//! The process under load: the real `cherry-bridge serve`, or this tool's
//! own floor mode, started as a child on free loopback ports, sampled from
//! `/proc`, and stopped with SIGTERM when the scenario is done.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bench's own secrets: the bridge only ever sees loopback clients of
/// this tool, so fixed values are good enough and keep runs reproducible.
pub const JWT_SECRET: &str = "cherry-bench-secret-not-for-production";
pub const AGENT_TOKEN: &str = "cherry-bench-agent-token";

/// Connection limits high enough that the bench, not the bridge's
/// admission policy, decides how many sockets are open.
const CONNECTION_LIMIT: &str = "100000";

/// How long a child may take to open its listeners.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Which program serves the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bridge,
    Floor,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bridge => "bridge",
            Kind::Floor => "floor",
        }
    }
}

/// A running child and where it listens.
pub struct Target {
    pub kind: Kind,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    child: Child,
    /// Where the child's stderr goes, named when something fails.
    pub log: PathBuf,
    /// The bridge's store, removed when the target stops.
    data_dir: PathBuf,
}

/// Paths of the two programs the bench starts.
#[derive(Clone, Debug)]
pub struct Programs {
    pub bridge: PathBuf,
    pub bench: PathBuf,
}

impl Programs {
    /// The bridge next to this executable unless told otherwise.
    pub fn locate(bridge: Option<PathBuf>) -> Result<Self, String> {
        let bench = std::env::current_exe().map_err(|e| format!("own path unknown: {e}"))?;
        let bridge = match bridge {
            Some(path) => path,
            None => bench.with_file_name("cherry-bridge"),
        };
        if !bridge.exists() {
            return Err(format!(
                "{} not found: run `cargo build --release` first or pass --bridge",
                bridge.display()
            ));
        }
        Ok(Programs { bridge, bench })
    }
}

impl Target {
    /// Starts `kind` on two free loopback ports and waits until both accept.
    pub fn start(kind: Kind, programs: &Programs, label: &str) -> Result<Self, String> {
        let http = free_port()?;
        let grpc = free_port()?;
        let log = std::env::temp_dir().join(format!(
            "cherry-bench-{}-{label}-{}.log",
            kind.name(),
            std::process::id()
        ));
        let stderr = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        // A fresh store per run, as `serve` persists by default: setup
        // upserts pay for durability as they would in production.
        let data_dir =
            std::env::temp_dir().join(format!("cherry-bench-store-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);

        let mut command = match kind {
            Kind::Bridge => {
                let mut command = Command::new(&programs.bridge);
                command
                    .arg("serve")
                    .arg("--data-dir")
                    .arg(&data_dir)
                    .args(["--max-connections", CONNECTION_LIMIT])
                    .args(["--max-connections-per-account", CONNECTION_LIMIT])
                    .env("CHERRY_JWT_SECRET", JWT_SECRET)
                    .env("CHERRY_AGENT_TOKEN", AGENT_TOKEN);
                command
            }
            Kind::Floor => {
                let mut command = Command::new(&programs.bench);
                command.arg("floor");
                command
            }
        };
        command
            .args(["--http-addr", &http.to_string()])
            .args(["--grpc-addr", &grpc.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start the {}: {e}", kind.name()))?;

        let mut target = Target {
            kind,
            http,
            grpc,
            child,
            log,
            data_dir,
        };
        target.wait_ready()?;
        Ok(target)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the {} exited at start ({status}); see {}",
                    self.kind.name(),
                    self.log.display()
                ));
            }
            let up = |addr| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            if up(self.http) && up(self.grpc) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("the {} did not start listening", self.kind.name()))
    }

    /// CPU time (user + system) the child used so far.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.child.id()).unwrap_or_default()
    }

    /// Resident memory of the child now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id()).unwrap_or_default()
    }
}

impl Drop for Target {
    /// SIGTERM first so the bridge closes its sockets the way it would in
    /// production; SIGKILL if it takes too long.
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: `kill` has no memory-safety preconditions; the pid is our
        // own child, not yet reaped, so it cannot name another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut exited = false;
        while !exited && Instant::now() < deadline {
            exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if !exited {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A loopback port nobody listens on right now. Another process could take
/// it before the child binds it; the child then fails to start and says so.
fn free_port() -> Result<SocketAddr, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free loopback port: {e}"))?;
    listener
        .local_addr()
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// User plus system CPU time of a process, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros(
        (utime + stime) * 1_000_000 / per_second,
    ))
}

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Raises this process's file-descriptor limit to its hard limit, which the
/// children inherit. Returns the limit in effect and, if it could not be
/// raised, why.
pub fn raise_fd_limit() -> (u64, Option<String>) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return (0, Some(std::io::Error::last_os_error().to_string()));
    }
    if limit.rlim_cur >= limit.rlim_max {
        return (limit.rlim_cur, None);
    }
    let wanted = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: `wanted` is a valid rlimit that does not exceed the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } != 0 {
        let error = std::io::Error::last_os_error();
        return (limit.rlim_cur, Some(error.to_string()));
    }
    (limit.rlim_max, None)
}

/// Sets this process's niceness; the children it starts inherit it.
pub fn set_niceness(nice: i32) -> Result<(), String> {
    // SAFETY: setpriority has no memory-safety preconditions; `0` names
    // this process.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if result != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}
