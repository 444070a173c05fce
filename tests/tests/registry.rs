//! Pull and push against a real registry: Debian's docker-registry
//! (distribution) on 127.0.0.1, filled with skopeo.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_e2e::{
    find_program, free_port, require_root, run_command, wait_until, Berth, Output, RunOpts,
};

/// A docker-registry process, killed on drop.
struct Registry {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(bin: &Path) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut registry = Registry {
            child,
            addr,
            log,
            _dir: dir,
        };
        let up = wait_until(Duration::from_secs(20), || registry.ping());
        if !up {
            let exited = registry.child.try_wait().ok().flatten();
            panic!(
                "docker-registry did not answer on {} (exited: {exited:?}); log:\n{}",
                registry.addr,
                registry.log_text()
            );
        }
        registry
    }

    /// GET /v2/ answers 200.
    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.starts_with("HTTP/1.1 200")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Tools {
    registry: PathBuf,
    skopeo: PathBuf,
}

fn tools() -> Option<Tools> {
    let registry = find_program("docker-registry");
    let skopeo = find_program("skopeo");
    match (registry, skopeo) {
        (Some(registry), Some(skopeo)) => Some(Tools { registry, skopeo }),
        (r, s) => {
            let missing: Vec<&str> = [("docker-registry", r.is_none()), ("skopeo", s.is_none())]
                .into_iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| n)
                .collect();
            println!(
                "skipped: {} not installed (apt-get install docker-registry skopeo, or run scripts/setup.sh)",
                missing.join(" and ")
            );
            None
        }
    }
}

fn skopeo(tools: &Tools, args: &[&str]) -> Output {
    let mut cmd = Command::new(&tools.skopeo);
    cmd.arg("--insecure-policy").args(args);
    run_command(
        cmd,
        RunOpts {
            timeout: Some(Duration::from_secs(120)),
            ..RunOpts::default()
        },
    )
}

/// Saves busybox with berth and copies it into the registry with skopeo.
fn seed(tools: &Tools, registry: &Registry, repo_tag: &str) -> String {
    let src = Berth::with_busybox();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("busybox.tar");
    src.ok(&["save", "-o", file.to_str().unwrap(), "busybox:latest"]);
    let dest = format!("docker://{}/{repo_tag}", registry.addr);
    let out = skopeo(
        tools,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci-archive:{}", file.display()),
            &dest,
        ],
    );
    assert!(
        out.success(),
        "skopeo copy failed: {out}\nregistry log:\n{}",
        registry.log_text()
    );
    src.inspect("busybox")["Id"].as_str().unwrap().to_string()
}

#[test]
fn pull_by_tag_and_digest_then_run() {
    require_root!();
    let Some(tools) = tools() else {
        return;
    };
    let registry = Registry::start(&tools.registry);
    let image_id = seed(&tools, &registry, "test/busybox:v1");
    let reference = format!("{}/test/busybox:v1", registry.addr);

    let b = Berth::new();
    let out = b.run_with(
        &["pull", "--insecure", &reference],
        RunOpts {
            timeout: Some(Duration::from_secs(120)),
            ..RunOpts::default()
        },
    );
    assert!(
        out.success(),
        "pull failed: {out}\nregistry log:\n{}",
        registry.log_text()
    );
    assert_eq!(
        b.inspect(&reference)["Id"],
        image_id.as_str(),
        "the pulled image has the pushed config, hence the same id"
    );
    let images = b.ok(&["images"]).stdout;
    assert!(
        images.lines().any(
            |l| l.starts_with(&format!("{}/test/busybox ", registry.addr)) && l.contains(" v1 ")
        ),
        "{images}"
    );
    let out = b.ok(&["run", "--rm", &reference, "echo", "pulled"]);
    assert_eq!(out.stdout, "pulled\n", "{out}");

    // By digest, into a fresh store.
    let inspect = skopeo(
        &tools,
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    inspect.assert_success();
    let digest = serde_json::from_str::<serde_json::Value>(&inspect.stdout).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{inspect}");
    let by_digest = format!("{}/test/busybox@{digest}", registry.addr);
    let c = Berth::new();
    let out = c.run_with(
        &["pull", "--insecure", &by_digest],
        RunOpts {
            timeout: Some(Duration::from_secs(120)),
            ..RunOpts::default()
        },
    );
    assert!(
        out.success(),
        "pull by digest failed: {out}\nregistry log:\n{}",
        registry.log_text()
    );
    assert_eq!(c.inspect(&by_digest)["Id"], image_id.as_str());
    let out = c.ok(&["run", "--rm", &by_digest, "echo", "by-digest"]);
    assert_eq!(out.stdout, "by-digest\n", "{out}");

    // `run` pulls an image it does not have, as `docker run` does.
    let d = Berth::new();
    let out = d.run_with(
        &["run", "--rm", &reference, "echo", "auto-pulled"],
        RunOpts {
            timeout: Some(Duration::from_secs(120)),
            ..RunOpts::default()
        },
    );
    out.assert_code(0);
    assert_eq!(out.stdout, "auto-pulled\n", "{out}");
    assert!(out.stderr.contains("Unable to find image"), "{out}");
    assert_eq!(d.inspect(&reference)["Id"], image_id.as_str());
    let out = Berth::new().run(&["run", "--rm", "--pull", "never", &reference, "true"]);
    out.assert_code(125);

    // A tag the registry does not have is a berth error.
    let out = c.run(&[
        "pull",
        "--insecure",
        &format!("{}/test/busybox:nope", registry.addr),
    ]);
    out.assert_code(1);
    assert!(out.stderr.starts_with("berth: "), "{out}");
}

#[test]
fn push_then_pull_back() {
    require_root!();
    let Some(tools) = tools() else {
        return;
    };
    let registry = Registry::start(&tools.registry);
    let a = Berth::with_busybox();
    let image_id = a.inspect("busybox")["Id"].as_str().unwrap().to_string();
    let reference = format!("{}/test/pushed:v2", registry.addr);
    a.ok(&["tag", "busybox:latest", &reference]);
    // Docker talks plain HTTP to registries on 127.0.0.0/8 without being told.
    let out = a.run_with(
        &["push", &reference],
        RunOpts {
            timeout: Some(Duration::from_secs(120)),
            ..RunOpts::default()
        },
    );
    assert!(
        out.success(),
        "push failed: {out}\nregistry log:\n{}",
        registry.log_text()
    );

    let inspect = skopeo(
        &tools,
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    assert!(
        inspect.success(),
        "the pushed image is not in the registry: {inspect}"
    );

    let b = Berth::new();
    let out = b.run_with(
        &["pull", "--insecure", &reference],
        RunOpts {
            timeout: Some(Duration::from_secs(120)),
            ..RunOpts::default()
        },
    );
    out.assert_success();
    assert_eq!(b.inspect(&reference)["Id"], image_id.as_str());
    assert_eq!(
        b.ok(&["run", "--rm", &reference, "echo", "round-trip"])
            .stdout,
        "round-trip\n"
    );
}
