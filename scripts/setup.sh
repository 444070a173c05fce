#!/usr/bin/env bash
# berth's one set-up command, for a fresh Debian 12 machine (run as root):
#
#   ./scripts/setup.sh
#
# 1. installs the Debian packages berth, its tests and its benchmark need
#    (skipped when they are all installed already);
# 2. installs a Rust toolchain with rustup if there is no cargo;
# 3. builds the workspace in release mode;
# 4. builds the busybox image from Debian's busybox-static and imports it into
#    the default store (/var/lib/berth, or $BERTH_ROOT) as busybox:latest;
# 5. runs the main job: berth run --rm busybox echo "hello from berth";
# 6. installs QEMU and vhost-device-vsock, and builds the guest kernel (cached) and the
#    guest agent's initramfs, for --runtime=vm.
#
# Safe to run again: every step is idempotent.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'setup.sh: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run me as root (berth needs namespaces, mounts and cgroups; apt-get needs root)"

# --- 1. Debian packages ----------------------------------------------------
packages=(
    # what berth drives or is compared with
    busybox-static runc iproute2
    # the registry test (a local registry and a client that pushes to it)
    docker-registry skopeo
    # the OCI runtime and containerd shim tests drive the real podman and containerd
    podman containerd
    # the Docker test plugs berth-runtime into a private dockerd (20.10) as --runtime=berth
    docker.io
    # the benchmark
    hyperfine python3
    # the tests: script(1) for the tty test, ps, tar, python3's pty module
    util-linux procps tar
    # building the workspace (aws-lc-sys and zstd-sys need a C toolchain)
    build-essential pkg-config ca-certificates curl git
)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
else
    step "Debian packages already installed"
fi

# --- 2. Rust ----------------------------------------------------------------
if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    step "installing Rust with rustup (Debian's rustc is older than berth's rust-version 1.85)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain stable --component clippy,rustfmt
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if command -v rustup >/dev/null 2>&1; then
    for c in clippy rustfmt; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
            rustup component add "$c"
        fi
    done
fi
cargo --version

# --- 3. build -------------------------------------------------------------
step "cargo build --release --workspace"
cargo build --release --workspace
berth=$repo/target/release/berth
[ -x "$berth" ] || die "$berth was not built"

# --- 4. the busybox image ----------------------------------------------------
step "building the busybox image"
mkdir -p target/test-images
tarball=target/test-images/busybox-rootfs.tar
tests/images/make-busybox-rootfs.sh "$tarball"
"$berth" import "$tarball" busybox:latest \
    --change 'CMD ["sh"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
"$berth" images

# --- 5. the main job ---------------------------------------------------------
step 'berth run --rm busybox echo "hello from berth"'
out=$("$berth" run --rm busybox echo "hello from berth")
printf '%s\n' "$out"
[ "$out" = "hello from berth" ] || die "expected \"hello from berth\", got \"$out\""

# --- 6. what --runtime=vm needs ----------------------------------------------
# QEMU, e2fsprogs, cpio and vhost-device-vsock; the guest kernel (cached outside the repo,
# keyed by its config fragments and the kernel source version: slow only the first time);
# the initramfs holding the static guest agent as /init.
step "installing what --runtime=vm needs (QEMU, vhost-device-vsock, ...)"
scripts/install-vm-deps.sh
step "building the guest kernel (cached outside the repository, in ~/.cache/berth)"
scripts/build-guest-kernel.sh
step "building the guest agent's initramfs"
scripts/build-initramfs.sh

step "set-up done; run the tests with ./scripts/test.sh"
