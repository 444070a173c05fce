#!/usr/bin/env bash
# Build a small, deterministic busybox root filesystem tarball from Debian's
# statically linked busybox (package busybox-static).
#
#   tests/images/make-busybox-rootfs.sh OUT.tar
#
# Layout follows the official `busybox` image: bin/busybox plus one symlink per
# applet in bin/, a minimal etc/passwd and etc/group (root, daemon, nobody and
# an unprivileged `user` with uid/gid 1000), and the usual empty directories.
# The tarball is byte-for-byte reproducible: sorted entries, fixed mtimes,
# owner root:root.
#
# Turn it into an image with:
#   berth import OUT.tar busybox:latest --change 'CMD ["sh"]' \
#     --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
set -euo pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUT.tar" >&2
    exit 2
fi

out=$1
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -x "$busybox" ]; then
    echo "$0: $busybox not found; install Debian's busybox-static (apt-get install busybox-static)" >&2
    exit 1
fi
# A dynamically linked busybox (Debian's `busybox` package) would not run
# inside the image, which carries no libc.
if ! "$busybox" --list >/dev/null 2>&1; then
    echo "$0: $busybox does not run" >&2
    exit 1
fi
if command -v file >/dev/null 2>&1 && file -L "$busybox" | grep -q 'dynamically linked'; then
    echo "$0: $busybox is dynamically linked; install busybox-static" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

mkdir -p "$root"
for d in bin dev etc home proc root sys tmp usr var var/spool/mail home/user; do
    mkdir -p "$root/$d"
done
chmod 0755 "$root" "$root"/bin "$root"/dev "$root"/etc "$root"/home "$root"/proc \
    "$root"/sys "$root"/usr "$root"/var "$root"/var/spool "$root"/var/spool/mail
chmod 0700 "$root/root"
chmod 1777 "$root/tmp"
chmod 0755 "$root/home/user"

install -m 0755 "$busybox" "$root/bin/busybox"
"$busybox" --list | LC_ALL=C sort -u | while read -r applet; do
    case "$applet" in
        busybox | "" | */*) continue ;;
    esac
    ln -s busybox "$root/bin/$applet"
done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
user:x:1000:
nogroup:x:65534:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# Entries are named without a leading "./", like layers from a registry.
LC_ALL=C tar --create --file "$out.tmp" --directory "$root" \
    --sort=name --mtime='2024-01-01 00:00:00 UTC' \
    --owner=0 --group=0 --numeric-owner \
    --format=gnu \
    bin dev etc home proc root sys tmp usr var
mv "$out.tmp" "$out"
