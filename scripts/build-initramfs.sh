#!/usr/bin/env bash
# Build berth's guest initramfs: a statically linked berth-agent as /init plus
# the directories it mounts on and a /dev/console node.
#
#   scripts/build-initramfs.sh [OUT]
#
# OUT defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/berth/initramfs.cpio.gz.
# Needs cpio (Debian package `cpio`; installed with apt-get when missing and
# running as root). Prints the path of the archive.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/initramfs.cpio.gz}
target=x86_64-unknown-linux-gnu

# The /dev/console node needs mknod.
if [ "$(id -u)" != 0 ]; then
    echo "$0: run as root (the archive holds a /dev/console device node)" >&2
    exit 1
fi

if ! command -v cpio >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -qq cpio >/dev/null
    else
        echo "$0: cpio is not installed (apt-get install cpio)" >&2
        exit 1
    fi
fi

(
    cd "$repo"
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release -p berth-agent --bin berth-agent --target "$target" >&2
)
agent="$repo/target/$target/release/berth-agent"
if command -v file >/dev/null 2>&1 && file -L "$agent" | grep -q 'dynamically linked'; then
    echo "$0: $agent is dynamically linked" >&2
    exit 1
fi

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging"/{dev,proc,sys,run,tmp,etc}
chmod 1777 "$staging/tmp"
install -m 0755 "$agent" "$staging/init"
if command -v strip >/dev/null 2>&1; then
    strip --strip-all "$staging/init"
fi
mknod -m 0600 "$staging/dev/console" c 5 1
mknod -m 0666 "$staging/dev/null" c 1 3

mkdir -p "$(dirname "$out")"
tmp_out="$out.tmp.$$"
(
    cd "$staging"
    # Sorted, owner root, fixed mtimes: reproducible for the same agent binary.
    find . -mindepth 1 -exec touch -h -d @0 {} +
    find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0
) | gzip -9 -n >"$tmp_out"
mv "$tmp_out" "$out"
echo "$out"
