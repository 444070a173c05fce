#!/usr/bin/env bash
# Installs what berth's `--runtime=vm` needs on the host, skipping what is already there:
#   qemu-system-x86_64 (Debian: qemu-system-x86), mkfs.ext4 (e2fsprogs), cpio (initramfs),
#   and vhost-device-vsock (rust-vmm's vsock backend for QEMU's vhost-user-vsock device).
# The guest kernel and initramfs are built by scripts/build-guest-kernel.sh and
# scripts/build-initramfs.sh.
set -euo pipefail

need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
command -v cpio >/dev/null || need_apt+=(cpio)

if ((${#need_apt[@]})); then
    echo "installing ${need_apt[*]}"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if command -v vhost-device-vsock >/dev/null || [[ -x "${HOME:-/root}/.cargo/bin/vhost-device-vsock" ]]; then
    echo "vhost-device-vsock: $(command -v vhost-device-vsock || echo "${HOME:-/root}/.cargo/bin/vhost-device-vsock")"
else
    echo "installing vhost-device-vsock (cargo install, a few minutes)"
    root=()
    # As root, install system-wide so that berth finds it whatever HOME is.
    [[ $(id -u) -ne 0 ]] || root=(--root /usr/local)
    cargo install vhost-device-vsock --locked "${root[@]}"
fi

echo "qemu:  $(qemu-system-x86_64 --version | head -1)"
echo "mkfs:  $(mkfs.ext4 -V 2>&1 | head -1)"
echo "vsock: $(vhost-device-vsock --version 2>/dev/null || echo installed)"
