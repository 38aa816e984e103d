//! Child processes and the helpers to find, start and wait for them.

use std::{
    collections::HashMap,
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The directory holding the workspace's compiled binaries: the one of the
/// running executable's profile (a test runs from target/<profile>/deps/, a
/// tool such as the benchmark from target/<profile>/).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("target/<profile>");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary, which must have been built (`cargo build --workspace --bins`).
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (tests/run.sh does)",
        path.display()
    );
    path
}

/// Finds a program on PATH (the Debian packages install to /usr/bin or /usr/sbin).
pub fn program(name: &str) -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]);
    for dir in candidates {
        let path = dir.join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("{name} is not installed: run tests/run.sh, which installs it (apt-get install {name})");
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens on port {port} after {within:?}");
}

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed when dropped, with its output in a log file. It
/// can be killed and started again (same command) through a shared reference.
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: HashMap<String, String>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Process {
    pub fn spawn(
        name: &str,
        program: PathBuf,
        args: Vec<String>,
        env: HashMap<String, String>,
        log_dir: &Path,
    ) -> Self {
        let process = Self {
            name: name.to_owned(),
            program,
            args,
            env,
            log: log_dir.join(format!("{name}.log")),
            child: Mutex::new(None),
        };
        process.start_again();
        process
    }

    /// Starts the command (again, after [`Process::kill`]).
    pub fn start_again(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        *self.child.lock().expect("lock") = Some(child);
    }

    /// The running process's id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().expect("lock").as_ref().map(Child::id)
    }

    /// SIGKILL, like a crashed node. Its files stay.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status (at most `within`).
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.lock().expect("lock").take().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not exit within {within:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the same command again (same ports, same data directory).
    pub fn restart(&self) {
        self.kill();
        self.start_again();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server program on a free loopback port with its own data directory.
pub struct Server {
    pub port: u16,
    pub process: Process,
    _dir: TempDir,
}

impl Server {
    /// Starts `program` with the arguments `args(port, data_dir)` builds.
    pub async fn start(name: &str, args: impl FnOnce(u16, &Path) -> Vec<String>) -> Self {
        Self::start_on(name, free_port(), args).await
    }

    /// Starts `program` on a chosen port.
    pub async fn start_on(
        name: &str,
        port: u16,
        args: impl FnOnce(u16, &Path) -> Vec<String>,
    ) -> Self {
        Self::start_with_env(name, port, HashMap::new(), args).await
    }

    /// Starts `program` on a chosen port with `env` as its whole environment (and `PATH`).
    pub async fn start_with_env(
        name: &str,
        port: u16,
        env: HashMap<String, String>,
        args: impl FnOnce(u16, &Path) -> Vec<String>,
    ) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let process = Process::spawn(name, program(name), args(port, dir.path()), env, dir.path());
        wait_for_port(port, Duration::from_secs(10)).await;
        Self {
            port,
            process,
            _dir: dir,
        }
    }

    /// Restarts on the same port and data directory (what was persisted survives).
    pub async fn restart(&self) {
        self.process.restart();
        wait_for_port(self.port, Duration::from_secs(10)).await;
    }
}

pub(crate) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}
