//! End-to-end test harness for berth.
//!
//! The tests in `tests/tests/*.rs` drive the real `berth` binary the way a
//! user would: through its command line. Every test gets its own [`Berth`]: a
//! fresh state directory passed as `berth --root <tmp>`, so tests never see
//! each other's images or containers and never touch `/var/lib/berth`.
//!
//! Which binary is tested (first match wins):
//! 1. `$BERTH_BIN`;
//! 2. the `berth` next to the test executable's profile directory (the one
//!    `cargo build` just built with the same profile: `target/debug/berth` for
//!    `cargo test`);
//! 3. `<workspace>/target/debug/berth`, then `<workspace>/target/release/berth`.
//!
//! A package cannot depend on another package's binary, so `cargo test` does
//! not build `berth` by itself: `scripts/test.sh` runs `cargo build
//! --workspace` first.
//!
//! Most of berth needs root (namespaces, mounts, cgroups). Tests start with
//! [`require_root!`], which prints `skipped: <reason>` and returns when the
//! tests are not run as root.

use std::collections::hash_map::DefaultHasher;
use std::ffi::CString;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The script that builds the busybox root filesystem tarball.
const MAKE_ROOTFS_SCRIPT: &str = include_str!("../images/make-busybox-rootfs.sh");

/// The `PATH` the busybox image is imported with (the official image's).
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The reference every [`Berth::with_busybox`] store holds.
pub const BUSYBOX: &str = "busybox:latest";

/// How long a berth command may run before the harness kills it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long stdout/stderr may stay open after berth exited. A background
/// process that keeps berth's stdout open makes `id=$(berth run -d ...)` hang
/// in a shell, so the harness treats it as a bug.
const PIPE_GRACE: Duration = Duration::from_secs(5);

/// Skip the current test (print `skipped: <reason>` and return) unless it
/// runs as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::require_root() {
            return;
        }
    };
}

/// Whether the tests run as root. Prints `skipped: <reason>` when not.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        true
    } else {
        println!(
            "skipped: berth's end-to-end tests need root (namespaces, mounts, cgroups); \
             euid is {euid}. Run scripts/test.sh as root."
        );
        false
    }
}

/// The workspace's root directory.
pub fn workspace_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The cargo target directory the tests were built in.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace_dir().join(dir)
        };
    }
    // target/<profile>/deps/<test-exe>
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
    {
        if target.join("CACHEDIR.TAG").exists() {
            return target;
        }
    }
    workspace_dir().join("target")
}

/// The `berth` binary under test.
pub fn berth_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("BERTH_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "BERTH_BIN={} does not exist", bin.display());
            return bin;
        }
        let mut candidates = Vec::new();
        // target/<profile>/deps/<test-exe>: the berth of the same profile.
        if let Some(profile) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
        {
            candidates.push(profile.join("berth"));
        }
        let target = workspace_dir().join("target");
        candidates.push(target.join("debug").join("berth"));
        candidates.push(target.join("release").join("berth"));
        candidates
            .iter()
            .find(|c| c.is_file())
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "berth binary not found (looked at {candidates:?}); run `cargo build --workspace` \
                     first (scripts/test.sh does) or set BERTH_BIN"
                )
            })
    })
    .clone()
}

/// The version line of the host's busybox, e.g. `BusyBox v1.35.0 (Debian ...)`.
fn busybox_version() -> String {
    let out = Command::new(busybox_host())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", busybox_host().display()));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().unwrap_or("unknown").to_string()
}

fn busybox_host() -> PathBuf {
    std::env::var_os("BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// The busybox rootfs tarball made by `tests/images/make-busybox-rootfs.sh`,
/// built once and cached under `target/test-images/`, keyed by the host
/// busybox's version and the script's content.
pub fn busybox_tarball() -> PathBuf {
    static TARBALL: OnceLock<PathBuf> = OnceLock::new();
    TARBALL
        .get_or_init(|| {
            let version = busybox_version();
            let mut hasher = DefaultHasher::new();
            version.hash(&mut hasher);
            MAKE_ROOTFS_SCRIPT.hash(&mut hasher);
            let key: String = version
                .split_whitespace()
                .nth(1)
                .unwrap_or("unknown")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let dir = target_dir().join("test-images");
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            let tarball = dir.join(format!("busybox-{key}-{:016x}.tar", hasher.finish()));
            if tarball.is_file() {
                return tarball;
            }
            // Build under a unique name then rename, so that concurrent test
            // binaries never see a half-written tarball.
            let partial = dir.join(format!("busybox.{}.partial.tar", std::process::id()));
            let script = workspace_dir()
                .join("tests")
                .join("images")
                .join("make-busybox-rootfs.sh");
            let out = Command::new("bash")
                .arg(&script)
                .arg(&partial)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::rename(&partial, &tarball).unwrap_or_else(|e| {
                panic!(
                    "cannot rename {} to {}: {e}",
                    partial.display(),
                    tarball.display()
                )
            });
            tarball
        })
        .clone()
}

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit code, or 128 + the signal number when killed by a signal
    /// (like a shell's `$?`).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
    /// The command line, for messages.
    pub command: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Panic with the whole output unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// Panic with the whole output unless the command exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code: {self}");
        self
    }

    /// Panic unless this is one of berth's own errors from a command other than
    /// `run`/`create`: `berth: <message>` on stderr and exit code 1, as Docker's CLI does.
    pub fn assert_berth_error(&self) -> &Self {
        assert!(
            self.stderr.starts_with("berth: "),
            "berth's errors start with `berth: ` on stderr: {self}"
        );
        assert_eq!(
            self.code, 1,
            "failed commands other than run exit 1: {self}"
        );
        self
    }

    /// stdout without the trailing newline(s).
    pub fn out(&self) -> &str {
        self.stdout.trim_end_matches(['\n', '\r'])
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited {} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Exit status as a shell reports it.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

/// Options for [`Berth::run_with`] and [`run_command`].
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    /// Bytes written to the command's stdin (then closed). `None`: /dev/null.
    pub stdin: Option<Vec<u8>>,
    /// Defaults to [`DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '"', '\'', '$', '\\']) {
            s.push_str(&format!("{arg:?}"));
        } else {
            s.push_str(&arg);
        }
    }
    s
}

fn spawn_reader<R: Read + Send + 'static>(
    mut pipe: R,
    buf: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Ok(mut b) = buf.lock() {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
        let _ = done.send(());
    });
}

/// Run `cmd` to completion with a timeout, capturing stdout and stderr.
///
/// The command runs in its own process group; on timeout the whole group is
/// killed and the test panics with what was captured so far.
#[track_caller]
pub fn run_command(mut cmd: Command, opts: RunOpts) -> Output {
    let command = describe(&cmd);
    let timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.stdin(if opts.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);

    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn `{command}`: {e}"));
    if let Some(input) = opts.stdin {
        if let Some(mut stdin) = child.stdin.take() {
            thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
    }
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    if let Some(pipe) = child.stdout.take() {
        spawn_reader(pipe, Arc::clone(&stdout), tx.clone());
    }
    if let Some(pipe) = child.stderr.take() {
        spawn_reader(pipe, Arc::clone(&stderr), tx.clone());
    }
    drop(tx);

    let take = |buf: &Arc<Mutex<Vec<u8>>>| -> String {
        buf.lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };

    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => panic!("waiting for `{command}`: {e}"),
        }
        if start.elapsed() > timeout {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{command}` timed out after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                take(&stdout),
                take(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();

    // Both pipes must reach EOF soon after berth exits.
    let grace = Instant::now() + PIPE_GRACE;
    for _ in 0..2 {
        let left = grace.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "`{command}` exited {} but a process it left behind still holds its stdout or \
                 stderr open {PIPE_GRACE:?} later (a shell's `$(berth ...)` would hang)\n\
                 --- stdout ---\n{}\n--- stderr ---\n{}",
                exit_code(status),
                take(&stdout),
                take(&stderr)
            ),
        }
    }

    Output {
        code: exit_code(status),
        stdout: take(&stdout),
        stderr: take(&stderr),
        elapsed,
        command,
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions; a negative pid
        // names the process group we created with process_group(0).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// One isolated berth state directory (`berth --root <tmp>`), cleaned up on
/// drop: every container is removed with `rm -f`, leftover mounts under the
/// root are detached and the directory is deleted.
pub struct Berth {
    root: Option<tempfile::TempDir>,
    bin: PathBuf,
}

impl Berth {
    /// An empty store.
    pub fn new() -> Berth {
        let base = std::env::var_os("BERTH_E2E_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let root = tempfile::Builder::new()
            .prefix("berth-e2e-")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("cannot create a temp dir in {}: {e}", base.display()));
        Berth {
            root: Some(root),
            bin: berth_bin(),
        }
    }

    /// A store holding the busybox image as `busybox:latest`, imported with
    /// `berth import` from [`busybox_tarball`].
    #[track_caller]
    pub fn with_busybox() -> Berth {
        let berth = Berth::new();
        berth.import_busybox(BUSYBOX);
        berth
    }

    /// `berth import <busybox tarball> REF --change 'CMD ["sh"]' --change 'ENV PATH=...'`.
    #[track_caller]
    pub fn import_busybox(&self, reference: &str) {
        let tarball = busybox_tarball();
        let path_env = format!("ENV PATH={IMAGE_PATH}");
        self.ok(&[
            "import",
            path_str(&tarball),
            reference,
            "--change",
            r#"CMD ["sh"]"#,
            "--change",
            &path_env,
        ]);
    }

    /// The state directory passed as `--root`.
    pub fn root(&self) -> &Path {
        match &self.root {
            Some(dir) => dir.path(),
            None => Path::new("/nonexistent"),
        }
    }

    /// The berth binary under test.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `berth --root <root>`, ready for more arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        // Hermetic: no runtime or config file from the machine running the tests.
        cmd.arg("--root")
            .arg(self.root())
            .env_remove("BERTH_ROOT")
            .env_remove("BERTH_RUNTIME")
            .env("BERTH_CONFIG", self.root().join("no-config.json"));
        cmd
    }

    /// Run `berth --root <root> ARGS...` with the default timeout and no
    /// stdin.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, RunOpts::default())
    }

    /// Like [`Berth::run`] with options (stdin, timeout, environment).
    #[track_caller]
    pub fn run_with(&self, args: &[&str], opts: RunOpts) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run_command(cmd, opts)
    }

    /// Like [`Berth::run`], panicking with the whole output unless it exits 0.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        out.assert_success();
        out
    }

    /// Spawn `berth --root <root> ARGS...` with piped stdout/stderr and no
    /// stdin, for commands that keep running (`logs -f`, `wait`).
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", self.bin.display()))
    }

    /// `berth --root <root> ARGS...` on a pseudo-terminal (see [`drive_pty`]).
    pub fn drive_pty(
        &self,
        args: &[&str],
        typed: &str,
        patience: Duration,
        timeout: Duration,
    ) -> Output {
        let mut full = vec!["--root", path_str(self.root())];
        full.extend_from_slice(args);
        drive_pty(self.bin(), &full, typed, patience, timeout)
    }

    /// `berth inspect TARGET`, parsed; returns the array's only element.
    #[track_caller]
    pub fn inspect(&self, target: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", target]);
        let value: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("inspect output is not JSON ({e}): {out}"));
        let array = value
            .as_array()
            .unwrap_or_else(|| panic!("inspect output is not a JSON array: {out}"));
        assert_eq!(
            array.len(),
            1,
            "inspect {target} returned {} objects: {out}",
            array.len()
        );
        array[0].clone()
    }

    /// `berth run -d ARGS...`, returning the container id it printed (checked
    /// to be 64 hex digits).
    #[track_caller]
    pub fn run_detached(&self, args: &[&str]) -> String {
        let mut full = vec!["run", "-d"];
        full.extend_from_slice(args);
        let out = self.ok(&full);
        let id = out.out().trim().to_string();
        assert!(
            is_full_id(&id),
            "run -d must print a 64-hex container id, got {id:?}: {out}"
        );
        id
    }

    /// The ids (`ps -aq`) of every container in the store.
    #[track_caller]
    pub fn all_ids(&self) -> Vec<String> {
        self.ok(&["ps", "-aq"])
            .stdout
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// The `State.Status` inspect reports for a container.
    #[track_caller]
    pub fn status(&self, container: &str) -> String {
        self.inspect(container)["State"]["Status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Poll until the container's `State.Status` is `status`.
    #[track_caller]
    pub fn wait_for_status(&self, container: &str, status: &str, timeout: Duration) {
        let mut last = String::new();
        let ok = wait_until(timeout, || {
            last = self.status(container);
            last == status
        });
        assert!(
            ok,
            "container {container} did not become {status:?} within {timeout:?} (last: {last:?})"
        );
    }
}

impl Default for Berth {
    fn default() -> Self {
        Berth::new()
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let Some(root) = self.root.take() else {
            return;
        };
        let path = root.path().to_path_buf();
        let quiet = |args: &[&str]| {
            let mut cmd = Command::new(&self.bin);
            cmd.arg("--root").arg(&path).args(args);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            // Never let cleanup hang a test run.
            let Ok(mut child) = cmd.spawn() else {
                return String::new();
            };
            let start = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if start.elapsed() < Duration::from_secs(30) => {
                        thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                let _ = stdout.read_to_string(&mut out);
            }
            out
        };
        let ids = quiet(&["ps", "-aq"]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            quiet(&args);
        }
        // Detach whatever berth left mounted under the root before deleting
        // it, so that removing the directory never descends into a bind mount
        // of a host directory.
        for mount in mounts_under(&path).iter().rev() {
            if let Ok(c) = CString::new(mount.as_os_str().as_encoded_bytes()) {
                // SAFETY: c is a valid NUL-terminated path for the duration
                // of the call.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
        if mounts_under(&path).is_empty() {
            drop(root);
        } else {
            // Never delete through a mount we could not detach.
            let _ = root.keep();
        }
    }
}

/// `s` as `&str`, panicking on non-UTF-8 paths (test paths are ASCII).
pub fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
}

/// Whether `s` is a full container/image id: 64 lowercase hex digits.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Poll `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Unescape a mountinfo field (`\040` for space and friends).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// Mount points in this process's mount namespace that are `dir` or lie
/// under it, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// cgroup directories (v1 controllers and the unified hierarchy) whose name
/// contains `id` under a `berth` parent: `/sys/fs/cgroup/*/berth/*<id>*` and
/// `/sys/fs/cgroup/berth/*<id>*`.
pub fn cgroup_dirs_for(id: &str) -> Vec<PathBuf> {
    let mut parents = vec![PathBuf::from("/sys/fs/cgroup/berth")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for entry in entries.flatten() {
            parents.push(entry.path().join("berth"));
        }
    }
    let mut found = Vec::new();
    for parent in parents {
        if let Ok(entries) = std::fs::read_dir(&parent) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().contains(id) {
                    found.push(entry.path());
                }
            }
        }
    }
    found
}

/// Whether a program is on `PATH`.
pub fn have_program(name: &str) -> bool {
    find_program(name).is_some()
}

/// A program's full path on `PATH` (plus `/usr/sbin` and `/sbin`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}

/// Reading a container's cgroup limits from the host, through
/// `/proc/<pid>/cgroup` (cgroup v1 or v2).
pub mod oci;

pub mod cgroup {
    use std::path::PathBuf;

    /// The directory of `pid`'s cgroup for a v1 `controller`, or its unified
    /// (v2) cgroup when the controller is not mounted as v1.
    pub fn dir(pid: i64, controller: &str) -> Option<PathBuf> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mut unified = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let rel = path.trim_start_matches('/');
            if controllers.is_empty() {
                unified = Some(rel.to_string());
                continue;
            }
            if controllers.split(',').any(|c| c == controller) {
                for mount in [controllers, controller] {
                    let d = PathBuf::from("/sys/fs/cgroup").join(mount).join(rel);
                    if d.is_dir() {
                        return Some(d);
                    }
                }
            }
        }
        let rel = unified?;
        for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let d = PathBuf::from(base).join(&rel);
            if d.join("cgroup.controllers").exists() {
                return Some(d);
            }
        }
        None
    }

    fn read(pid: i64, controller: &str, v1: &str, v2: &str) -> Option<String> {
        let d = dir(pid, controller)?;
        std::fs::read_to_string(d.join(v1))
            .or_else(|_| std::fs::read_to_string(d.join(v2)))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// memory.limit_in_bytes (v1) or memory.max (v2).
    pub fn memory_limit(pid: i64) -> Option<String> {
        read(pid, "memory", "memory.limit_in_bytes", "memory.max")
    }

    /// pids.max.
    pub fn pids_max(pid: i64) -> Option<String> {
        read(pid, "pids", "pids.max", "pids.max")
    }

    /// (quota, period) in microseconds: cpu.cfs_quota_us and
    /// cpu.cfs_period_us (v1) or cpu.max (v2).
    pub fn cpu_quota(pid: i64) -> Option<(i64, i64)> {
        let d = dir(pid, "cpu")?;
        if let (Ok(q), Ok(p)) = (
            std::fs::read_to_string(d.join("cpu.cfs_quota_us")),
            std::fs::read_to_string(d.join("cpu.cfs_period_us")),
        ) {
            return Some((q.trim().parse().ok()?, p.trim().parse().ok()?));
        }
        let max = std::fs::read_to_string(d.join("cpu.max")).ok()?;
        let mut it = max.split_whitespace();
        let q = it.next()?;
        let p = it.next()?.parse().ok()?;
        Some((if q == "max" { -1 } else { q.parse().ok()? }, p))
    }
}

/// Hand-made image archives, for testing what `berth load` accepts and
/// rejects independently of `berth save`.
pub mod archive {
    use sha2::{Digest, Sha256};

    /// One entry of a hand-made tar.
    pub enum Entry<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Symlink(&'a str, &'a str),
    }

    pub fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn octal(field: &mut [u8], value: u64) {
        let width = field.len() - 1;
        let s = format!("{value:0width$o}");
        field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
        field[width] = 0;
    }

    /// A ustar archive written by hand, byte by byte, so that it can hold
    /// names the `tar` crate refuses to write (`../evil`, absolute paths).
    pub fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in entries {
            let (name, kind, mode, data, link): (&str, u8, u64, &[u8], &str) = match entry {
                Entry::Dir(n) => (n, b'5', 0o755, &[], ""),
                Entry::File(n, d) => (n, b'0', 0o644, d, ""),
                Entry::Symlink(n, t) => (n, b'2', 0o777, &[], t),
            };
            assert!(
                name.len() < 100 && link.len() < 100,
                "name too long for this tar writer"
            );
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            octal(&mut h[100..108], mode);
            octal(&mut h[108..116], 0);
            octal(&mut h[116..124], 0);
            octal(&mut h[124..136], data.len() as u64);
            octal(&mut h[136..148], 1_704_067_200);
            h[148..156].fill(b' ');
            h[156] = kind;
            h[157..157 + link.len()].copy_from_slice(link.as_bytes());
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[265..269].copy_from_slice(b"root");
            h[297..301].copy_from_slice(b"root");
            let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
            let s = format!("{sum:06o}\0 ");
            h[148..156].copy_from_slice(s.as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            out.extend(std::iter::repeat_n(0u8, pad));
        }
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    /// An image archive in the layout `docker save` writes since Docker 25:
    /// an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`)
    /// plus Docker's `manifest.json`, holding one image tagged `reference`
    /// (`name:tag`) made of uncompressed `layers` and running `cmd`.
    pub fn image_archive(reference: &str, layers: &[Vec<u8>], cmd: &[&str]) -> Vec<u8> {
        let layer_digests: Vec<String> = layers.iter().map(|l| sha256_hex(l)).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {
                "Env": [format!("PATH={}", crate::IMAGE_PATH)],
                "Cmd": cmd,
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": layer_digests.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>(),
            },
            "history": layers.iter().map(|_| serde_json::json!({"created_by": "e2e test"})).collect::<Vec<_>>(),
        });
        let config = serde_json::to_vec(&config).unwrap_or_default();
        let config_digest = sha256_hex(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{config_digest}"),
                "size": config.len(),
            },
            "layers": layers.iter().zip(&layer_digests).map(|(l, d)| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{d}"),
                "size": l.len(),
            })).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
        let manifest_digest = sha256_hex(&manifest);
        let full_ref = if reference.contains('/') {
            reference.to_string()
        } else {
            format!("docker.io/library/{reference}")
        };
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_digest}"),
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": full_ref,
                    "org.opencontainers.image.ref.name": reference.rsplit(':').next().unwrap_or("latest"),
                },
            }],
        });
        let index = serde_json::to_vec(&index).unwrap_or_default();
        let docker_manifest = serde_json::json!([{
            "Config": format!("blobs/sha256/{config_digest}"),
            "RepoTags": [reference],
            "Layers": layer_digests.iter().map(|d| format!("blobs/sha256/{d}")).collect::<Vec<_>>(),
        }]);
        let docker_manifest = serde_json::to_vec(&docker_manifest).unwrap_or_default();

        let names: Vec<(String, &[u8])> = layer_digests
            .iter()
            .zip(layers)
            .map(|(d, l)| (format!("blobs/sha256/{d}"), l.as_slice()))
            .chain([
                (format!("blobs/sha256/{config_digest}"), config.as_slice()),
                (
                    format!("blobs/sha256/{manifest_digest}"),
                    manifest.as_slice(),
                ),
            ])
            .collect();
        let mut entries = vec![Entry::Dir("blobs/"), Entry::Dir("blobs/sha256/")];
        for (name, data) in &names {
            entries.push(Entry::File(name, data));
        }
        entries.push(Entry::File("index.json", &index));
        entries.push(Entry::File("manifest.json", &docker_manifest));
        entries.push(Entry::File(
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        ));
        tar(&entries)
    }
}

/// Runs a program on a fresh pseudo-terminal (24x80) through python3's `pty` module: once
/// the program shows a shell prompt (`# ` or `$ `), or after `patience` without one, types
/// `typed`; returns what the terminal showed and the program's exit code.
pub fn drive_pty<S: AsRef<std::ffi::OsStr>>(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[S],
    typed: &str,
    patience: Duration,
    timeout: Duration,
) -> Output {
    const DRIVER: &str = r##"
import fcntl, os, pty, select, struct, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
typed = os.environ["TYPE"].encode()
patience = float(os.environ["PATIENCE"])
limit = float(os.environ["LIMIT"])
out = b""
sent = False
start = time.time()
while time.time() - start < limit:
    if not sent and (b"# " in out or b"$ " in out or time.time() - start > patience):
        time.sleep(0.2)
        os.write(fd, typed)
        sent = True
    r, _, _ = select.select([fd], [], [], 0.2)
    if fd in r:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
else:
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"##;
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(DRIVER)
        .arg(program)
        .args(args)
        .env("TYPE", typed)
        .env("PATIENCE", patience.as_secs_f64().to_string())
        .env("LIMIT", timeout.as_secs_f64().to_string());
    run_command(
        cmd,
        RunOpts {
            timeout: Some(timeout + Duration::from_secs(30)),
            ..RunOpts::default()
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::archive::{image_archive, tar, Entry};

    #[test]
    fn handmade_tar_is_read_by_gnu_tar() {
        let data = tar(&[
            Entry::Dir("d/"),
            Entry::File("d/f", b"hello\n"),
            Entry::Symlink("l", "d/f"),
            Entry::File("../evil", b"x"),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.tar");
        std::fs::write(&file, &data).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .collect();
        assert_eq!(names, ["d/", "d/f", "l", "../evil"], "{listing}");
        assert!(listing.contains("l -> d/f"), "{listing}");
    }

    #[test]
    fn handmade_image_archive_is_a_valid_oci_layout() {
        let layer = tar(&[Entry::File("hello.txt", b"hello\n")]);
        let data = image_archive("handmade:v1", &[layer], &["true"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("image.tar");
        std::fs::write(&file, &data).unwrap();
        let mut names: Vec<String> = ::tar::Archive::new(data.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(names.contains(&"index.json".to_string()), "{names:?}");
        assert!(names.contains(&"oci-layout".to_string()), "{names:?}");
        assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
        // skopeo validates digests and media types, when it is installed.
        if let Some(skopeo) = super::find_program("skopeo") {
            let out = std::process::Command::new(skopeo)
                .arg("--insecure-policy")
                .arg("inspect")
                .arg(format!("oci-archive:{}", file.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
