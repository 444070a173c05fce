//! The image store: import, images, inspect, tag, rmi, save and load,
//! including archives that try to escape the store.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use berth_e2e::archive::{image_archive, tar, Entry};
use berth_e2e::{busybox_tarball, is_full_id, require_root, Berth, IMAGE_PATH};

fn image_id(b: &Berth, reference: &str) -> String {
    let id = b.inspect(reference)["Id"].as_str().unwrap().to_string();
    let hex = id
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("image Id must be sha256:<hex>: {id}"));
    assert!(is_full_id(hex), "{id}");
    id
}

/// (repository, tag, image id) rows of `berth images`.
fn images(b: &Berth) -> Vec<(String, String, String)> {
    let out = b.ok(&["images"]);
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap_or_default();
    let mut at = 0;
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        at += header[at..]
            .find(col)
            .unwrap_or_else(|| panic!("images header lacks {col} (in order): {out}"))
            + col.len();
    }
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 3, "bad images row {l:?}");
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

#[test]
fn import_and_inspect_an_image() {
    require_root!();
    let b = Berth::with_busybox();
    let id = image_id(&b, "busybox");
    let img = b.inspect("busybox:latest");
    assert_eq!(img["Id"], id.as_str());
    assert_eq!(
        img["RepoTags"],
        serde_json::json!(["busybox:latest"]),
        "{img:#}"
    );
    assert_eq!(img["Config"]["Cmd"], serde_json::json!(["sh"]), "{img:#}");
    let env = img["Config"]["Env"].as_array().unwrap();
    assert!(
        env.contains(&serde_json::json!(format!("PATH={IMAGE_PATH}"))),
        "{img:#}"
    );
    assert_eq!(img["Os"], "linux", "{img:#}");

    let rows = images(&b);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "busybox");
    assert_eq!(rows[0].1, "latest");
    assert_eq!(
        rows[0].2,
        id["sha256:".len()..][..12],
        "IMAGE ID is the short id"
    );
}

#[test]
fn import_with_entrypoint_and_workdir_changes() {
    require_root!();
    let b = Berth::new();
    let tarball = busybox_tarball();
    b.ok(&[
        "import",
        tarball.to_str().unwrap(),
        "mine:1",
        "-c",
        r#"ENTRYPOINT ["echo", "entry"]"#,
        "-c",
        "WORKDIR /tmp",
        "-c",
        "ENV PATH=/bin",
        "-c",
        "USER user",
    ]);
    let out = b.ok(&["run", "--rm", "mine:1", "x", "y"]);
    assert_eq!(out.stdout, "entry x y\n", "{out}");
    let out = b.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        "mine:1",
        "-c",
        "pwd; id -un",
    ]);
    assert_eq!(out.stdout, "/tmp\nuser\n", "{out}");
}

#[test]
fn tag_and_rmi() {
    require_root!();
    let b = Berth::with_busybox();
    let id = image_id(&b, "busybox");
    b.ok(&["tag", "busybox:latest", "mybox:v1"]);
    assert_eq!(image_id(&b, "mybox:v1"), id);
    let rows = images(&b);
    assert!(
        rows.iter().any(|r| r.0 == "mybox" && r.1 == "v1"),
        "{rows:?}"
    );
    assert_eq!(
        b.ok(&["run", "--rm", "mybox:v1", "echo", "tagged"]).stdout,
        "tagged\n"
    );

    // Removing one tag keeps the image under its other tag.
    b.ok(&["rmi", "mybox:v1"]);
    let mut errors = Vec::new();
    let out = b.run(&["inspect", "mybox:v1"]);
    assert_ne!(out.code, 0, "{out}");
    errors.push(out);
    assert_eq!(image_id(&b, "busybox:latest"), id);

    // An image used by a container cannot be removed without -f.
    b.ok(&["run", "--name", "user-of-image", "busybox", "true"]);
    let out = b.run(&["rmi", "busybox"]);
    assert_ne!(out.code, 0, "{out}");
    errors.push(out);
    assert_eq!(images(&b).len(), 1);
    b.ok(&["rmi", "-f", "busybox"]);
    assert!(images(&b).is_empty());
    let out = b.run(&["rmi", "no-such-image"]);
    assert_ne!(out.code, 0, "{out}");
    errors.push(out);
    // Checked last so that a wrong exit code does not hide the rest.
    for out in &errors {
        out.assert_berth_error();
    }
}

#[test]
fn save_and_load_round_trip() {
    require_root!();
    let a = Berth::with_busybox();
    let id = image_id(&a, "busybox");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("busybox.tar");
    a.ok(&["save", "-o", file.to_str().unwrap(), "busybox:latest"]);

    // An OCI image layout (what skopeo's oci-archive: reads).
    let mut archive = tar::Archive::new(std::fs::File::open(&file).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string()
        })
        .collect();
    for needed in ["oci-layout", "index.json"] {
        assert!(
            names.iter().any(|n| n == needed),
            "save output lacks {needed}: {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.starts_with("blobs/sha256/")),
        "{names:?}"
    );

    let b = Berth::new();
    let out = b.ok(&["load", "-i", file.to_str().unwrap()]);
    assert!(
        out.stdout.contains("busybox:latest"),
        "load reports what it loaded: {out}"
    );
    assert_eq!(
        image_id(&b, "busybox:latest"),
        id,
        "content-addressed: same id after the round trip"
    );
    assert_eq!(
        b.ok(&["run", "--rm", "busybox", "echo", "loaded"]).stdout,
        "loaded\n"
    );
}

#[test]
fn load_a_handmade_archive() {
    require_root!();
    // Positive control for the malicious archives below: same format, sane
    // layers.
    let b = Berth::new();
    let rootfs = std::fs::read(busybox_tarball()).unwrap();
    let extra = tar(&[
        Entry::Dir("data/"),
        Entry::File("data/hello.txt", b"hello layer\n"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("handmade.tar");
    std::fs::write(
        &file,
        image_archive("handmade:v1", &[rootfs, extra], &["cat", "/data/hello.txt"]),
    )
    .unwrap();
    b.ok(&["load", "-i", file.to_str().unwrap()]);
    let out = b.ok(&["run", "--rm", "handmade:v1"]);
    assert_eq!(out.stdout, "hello layer\n", "{out}");
}

/// Every file named `name` under `dir`.
fn find_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy() == name {
                found.push(e.path());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    found
}

#[test]
fn load_rejects_a_layer_escaping_with_dotdot() {
    require_root!();
    let b = Berth::with_busybox();
    let before = images(&b);
    let marker = format!("evil-{}", std::process::id());
    let deep = format!("../../../../../../../../tmp/{marker}");
    let shallow = format!("../{marker}");
    let layer = tar(&[
        Entry::Dir("etc/"),
        Entry::File(&shallow, b"pwned\n"),
        Entry::File(&deep, b"pwned\n"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evil.tar");
    std::fs::write(&file, image_archive("evil:v1", &[layer], &["true"])).unwrap();

    let out = b.run(&["load", "-i", file.to_str().unwrap()]);
    assert_ne!(out.code, 0, "load must reject the layer: {out}");
    assert!(
        out.stderr.contains("..") || out.stderr.contains(&marker),
        "the error must say what is wrong with the layer: {out}"
    );
    assert_eq!(
        images(&b),
        before,
        "a rejected load must not change the store"
    );
    assert!(!b.run(&["inspect", "evil:v1"]).success());
    let parent = b.root().parent().unwrap();
    assert!(
        find_named(parent, &marker).is_empty(),
        "{:?}",
        find_named(parent, &marker)
    );
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "the layer wrote outside the store"
    );
    out.assert_berth_error();
}

#[test]
fn load_never_writes_through_a_symlink() {
    require_root!();
    let b = Berth::with_busybox();
    let marker = format!("evil-symlink-{}", std::process::id());
    let escape_dir = tempfile::tempdir().unwrap();
    let target = escape_dir.path().to_str().unwrap().to_string();
    let through = format!("escape/{marker}");
    let layer = tar(&[
        Entry::Symlink("escape", &target),
        Entry::File(&through, b"pwned\n"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("evil.tar");
    std::fs::write(&file, image_archive("evil:v2", &[layer], &["true"])).unwrap();

    // Docker resolves such paths inside the root filesystem or rejects them;
    // either way nothing may land in the symlink's host target.
    let out = b.run(&["load", "-i", file.to_str().unwrap()]);
    assert!(out.code == 0 || out.stderr.starts_with("berth: "), "{out}");
    assert!(
        !escape_dir.path().join(&marker).exists(),
        "load followed a symlink out of the layer: {out}"
    );
    if out.code == 0 {
        // If it was accepted, running it must not write there either.
        let _ = b.run(&["run", "--rm", "evil:v2", "true"]);
        assert!(!escape_dir.path().join(&marker).exists());
    }
}

#[test]
fn load_rejects_garbage() {
    require_root!();
    let b = Berth::with_busybox();
    let before = images(&b);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("garbage.tar");
    std::fs::write(&file, b"this is not a tar archive at all\n".repeat(100)).unwrap();
    let garbage = b.run(&["load", "-i", file.to_str().unwrap()]);
    assert_ne!(garbage.code, 0, "{garbage}");
    let missing = b.run(&["load", "-i", "/no/such/file.tar"]);
    assert_ne!(missing.code, 0, "{missing}");
    assert_eq!(images(&b), before);
    garbage.assert_berth_error();
    missing.assert_berth_error();
}
