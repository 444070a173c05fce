#!/usr/bin/env bash
# Builds berth's guest kernel: an uncompressed, PVH-capable x86_64 vmlinux
# from Debian's linux-source-6.1, configured by the fragments in
# guest-kernel-config/*.conf merged onto tinyconfig.
#
#   scripts/build-guest-kernel.sh               build if needed; print the vmlinux path
#   scripts/build-guest-kernel.sh --print-path  print the cached path (exit 1 if not built)
#
# Only the vmlinux path goes to stdout; progress and errors go to stderr, so
#   kernel=$(scripts/build-guest-kernel.sh)
# works. Cache layout (nothing is written inside the repository):
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/berth/
#     vmlinux -> kernel/<key>/vmlinux         stable symlink to the current build
#     kernel/<key>/vmlinux                    the kernel (key: see below)
#     kernel/<key>/config                     its final .config
#     kernel/<key>/build-info                 source version, fragments, counts, build time
#     kernel/src/linux-source-6.1_<version>/  Debian's source tarball, unpacked
#     kernel/obj/                             out-of-tree build dir, reused (incremental)
#     kernel/obj/build.log                    the last build's log
#
# <key> is the sha256 of: a recipe version (bumped when this script changes how
# a kernel is built), the name and content of every fragment, and the installed
# linux-source-6.1 package version. Same inputs: no work, the path is printed.
#
# Environment: BERTH_KERNEL_JOBS (default: nproc) parallel make jobs; the
# build runs under `nice -n 10`.
set -euo pipefail

# Bump when the build procedure (not the fragments) changes.
RECIPE_VERSION=1
SRC_PKG=linux-source-6.1
# Everything the build needs: bc, bison, flex (kconfig and the kernel's own
# generators), libelf-dev (objtool, which x86 always builds), xz-utils (the source
# tarball). No libssl-dev: without
# modules there is no module signing and no certificate tooling.
BUILD_PKGS=("$SRC_PKG" build-essential bc bison flex libelf-dev xz-utils)

prog=build-guest-kernel.sh
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}
say() { printf '%s: %s\n' "$prog" "$*" >&2; }

usage() {
    sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
}

print_only=false
case "${1:-}" in
"") ;;
--print-path) print_only=true ;;
-h | --help)
    usage
    exit 0
    ;;
*)
    usage >&2
    die "unknown argument: $1"
    ;;
esac
[ "$#" -le 1 ] || die "too many arguments"

repo=$(cd "$(dirname "$0")/.." && pwd)
frag_dir=$repo/guest-kernel-config
cache=${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/berth
kcache=$cache/kernel
link=$cache/vmlinux

mapfile -t fragments < <(LC_ALL=C ls -1 "$frag_dir"/*.conf 2>/dev/null || true)
[ "${#fragments[@]}" -gt 0 ] || die "no config fragments in $frag_dir (*.conf)"

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

src_version() {
    dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null
}

compute_key() {
    local version=$1 f
    {
        printf 'recipe %s\n' "$RECIPE_VERSION"
        printf 'source %s %s\n' "$SRC_PKG" "$version"
        for f in "${fragments[@]}"; do
            printf 'fragment %s\n' "$(basename "$f")"
            cat "$f"
            printf '\n'
        done
    } | sha256sum | cut -d' ' -f1
}

# Point $link at kernel/<key>/vmlinux (relative, so the cache can move)
# atomically: a new symlink renamed over the old one.
update_link() {
    local target=kernel/$1/vmlinux
    if [ "$(readlink "$link" 2>/dev/null || true)" != "$target" ]; then
        ln -sfn "$target" "$link.tmp.$$"
        mv -fT "$link.tmp.$$" "$link"
    fi
}

# --- --print-path --------------------------------------------------------------
if $print_only; then
    pkg_installed "$SRC_PKG" || die "not built: $SRC_PKG is not installed (run $prog)"
    key=$(compute_key "$(src_version)")
    out=$kcache/$key/vmlinux
    [ -f "$out" ] || die "not built: no $out (run $prog)"
    printf '%s\n' "$out"
    exit 0
fi

# --- packages --------------------------------------------------------------------
missing=()
for p in "${BUILD_PKGS[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages: ${missing[*]} (install them, or run me as root)"
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2 || die "apt-get update failed"
    apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
fi

version=$(src_version)
[ -n "$version" ] || die "cannot read the version of $SRC_PKG"
tarball=/usr/src/$SRC_PKG.tar.xz
[ -r "$tarball" ] || die "$SRC_PKG is installed but $tarball is missing"

key=$(compute_key "$version")
out_dir=$kcache/$key
out=$out_dir/vmlinux

mkdir -p "$kcache"

# One build at a time per cache (a concurrent caller waits, then finds it built).
exec 9>"$kcache/.lock"
if ! flock -n 9; then
    say "another build holds $kcache/.lock; waiting"
    flock 9
fi

if [ -f "$out" ]; then
    update_link "$key"
    printf '%s\n' "$out"
    exit 0
fi

# --- source --------------------------------------------------------------------
src=$kcache/src/${SRC_PKG}_$version
if [ ! -f "$src/.berth-unpacked" ]; then
    say "unpacking $tarball ($SRC_PKG $version) into $src"
    rm -rf "$src" "$src.tmp"
    mkdir -p "$src.tmp"
    tar -xJf "$tarball" -C "$src.tmp" || die "cannot unpack $tarball"
    [ -f "$src.tmp/$SRC_PKG/Makefile" ] || die "$tarball does not hold $SRC_PKG/Makefile"
    mv -T "$src.tmp/$SRC_PKG" "$src"
    rmdir "$src.tmp"
    touch "$src/.berth-unpacked"
    # Other versions' trees are dead weight (~1.3 GB each).
    for old in "$kcache"/src/"${SRC_PKG}"_*; do
        [ "$old" = "$src" ] || rm -rf "$old"
    done
fi

# --- configure -----------------------------------------------------------------
obj=$kcache/obj
# The object dir is reused across fragment changes, not across source versions.
if [ "$(cat "$obj/.berth-src" 2>/dev/null || true)" != "$src" ]; then
    rm -rf "$obj"
fi
mkdir -p "$obj"
printf '%s\n' "$src" >"$obj/.berth-src"
log=$obj/build.log
: >"$log"

export ARCH=x86_64
jobs=${BERTH_KERNEL_JOBS:-$(nproc)}
kmake() { make -C "$src" O="$obj" "$@"; }

say "configuring: tinyconfig + ${fragments[*]##*/}"
# What `make tinyconfig` does (allnoconfig with tiny-base.config, then the
# tiny.config fragments), with our fragments merged in the same pass, as Kata
# does: merge_config.sh -n, then olddefconfig.
base_frags=(
    "$src/kernel/configs/tiny-base.config"
    "$src/kernel/configs/tiny.config"
    "$src/arch/x86/configs/tiny.config"
)
for f in "${base_frags[@]}"; do
    [ -r "$f" ] || die "missing $f in the kernel source"
done
(cd "$src" && scripts/kconfig/merge_config.sh -n -O "$obj" "${base_frags[@]}" "${fragments[@]}") >>"$log" 2>&1 ||
    {
        tail -n 30 "$log" >&2
        die "merge_config.sh failed (log: $log)"
    }
kmake olddefconfig >>"$log" 2>&1 || {
    tail -n 30 "$log" >&2
    die "make olddefconfig failed (log: $log)"
}

# Every `=y` asked for must be in the final .config, and every `is not set`
# must not have come back as =y (a missing dependency or a select).
config=$obj/.config
bad=()
for f in "${fragments[@]}"; do
    while IFS= read -r sym; do
        grep -qx "$sym=y" "$config" || bad+=("$sym=y (asked in ${f##*/}; final: $(grep -E "^(# )?${sym}[= ]" "$config" || echo absent))")
    done < <(sed -n 's/^\(CONFIG_[A-Za-z0-9_]*\)=y$/\1/p' "$f")
    while IFS= read -r sym; do
        if grep -qx "$sym=[ym]" "$config"; then
            bad+=("$sym off (asked in ${f##*/}; final: $(grep -E "^$sym=" "$config"))")
        fi
    done < <(sed -n 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1/p' "$f")
done
if [ "${#bad[@]}" -gt 0 ]; then
    printf '%s: requested options not in the final .config:\n' "$prog" >&2
    printf '  %s\n' "${bad[@]}" >&2
    die "${#bad[@]} requested option(s) did not take (missing dependency? see $config)"
fi
ny=$(grep -c '=y$' "$config")
say "config ok: $ny options =y, $(grep -c '=m$' "$config" || true) =m"

# --- build ---------------------------------------------------------------------
incremental=
[ ! -f "$obj/vmlinux" ] || incremental=", incremental: obj/ reused"
say "building vmlinux with $jobs jobs (log: $log)"
start=$(date +%s)
nice -n 10 make -C "$src" O="$obj" -j"$jobs" vmlinux >>"$log" 2>&1 || {
    tail -n 40 "$log" >&2
    die "kernel build failed (log: $log)"
}
secs=$(($(date +%s) - start))
[ -f "$obj/vmlinux" ] || die "the build finished without $obj/vmlinux"

# The VMM and check-boot.sh need a PVH entry note (Xen ELF note 18, PHYS32_ENTRY).
if command -v readelf >/dev/null; then
    readelf -n "$obj/vmlinux" | grep -q 'Xen.*0x00000008\|PHYS32_ENTRY\|Unknown note type: (0x00000012)' ||
        die "vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"
fi

tmp=$out_dir.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$obj/vmlinux" "$tmp/vmlinux"
cp "$config" "$tmp/config"
{
    printf 'source: %s %s\n' "$SRC_PKG" "$version"
    printf 'kernel: %s\n' "$(cat "$obj/include/config/kernel.release" 2>/dev/null || echo unknown)"
    printf 'fragments: %s\n' "${fragments[*]##*/}"
    printf 'options =y: %s\n' "$ny"
    printf 'vmlinux bytes: %s\n' "$(stat -c %s "$tmp/vmlinux")"
    printf 'build seconds: %s (make -j%s, %s CPUs%s)\n' "$secs" "$jobs" "$(nproc)" "$incremental"
    printf 'built: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$tmp/build-info"
rm -rf "$out_dir"
mv -T "$tmp" "$out_dir"
update_link "$key"
# Keep the three most recent builds (the current one among them).
# shellcheck disable=SC2012 # <key> names are hex digits
ls -1dt "$kcache"/*/build-info 2>/dev/null | tail -n +4 | while IFS= read -r old; do
    old=${old%/build-info}
    [ "$old" = "$out_dir" ] || rm -rf "$old"
done
say "built in ${secs}s: $out ($(stat -c %s "$out") bytes, $ny options =y)"
printf '%s\n' "$out"
