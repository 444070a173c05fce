#!/usr/bin/env bash
# Boots berth's guest kernel under QEMU (microvm, no ACPI, TCG by default) with
# a throw-away busybox initramfs whose /init checks what berth's agent relies
# on, then prints BERTH-GUEST-OK and the kernel version and runs `reboot -f`.
#
#   guest-kernel-config/check-boot.sh [VMLINUX]
#
# VMLINUX defaults to $BERTH_GUEST_KERNEL (as the VMM's linux_boot test), then ${XDG_CACHE_HOME:-$HOME/.cache}/berth/vmlinux
# (what scripts/build-guest-kernel.sh maintains).
# Prints `skipped: <reason>` and exits 0 when QEMU, the kernel or a static
# busybox is missing; exits 1 when the guest fails a check or does not come up.
#
# Environment: BERTH_QEMU_ACCEL (default tcg; kvm works where /dev/kvm does),
# BERTH_BOOT_TIMEOUT (seconds, default 180), BERTH_QEMU_SMP (default 2),
# BERTH_BOOT_VERBOSE=1 (kernel messages with timestamps instead of `quiet`).
set -euo pipefail

prog=check-boot.sh
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 1
}
skip() {
    printf 'skipped: %s\n' "$*"
    exit 0
}

cache=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/berth
kernel=${1:-${BERTH_GUEST_KERNEL:-$cache/vmlinux}}
accel=${BERTH_QEMU_ACCEL:-tcg}
timeout_s=${BERTH_BOOT_TIMEOUT:-180}
smp=${BERTH_QEMU_SMP:-2}
kmsg=quiet
[ "${BERTH_BOOT_VERBOSE:-0}" = 0 ] || kmsg="printk.time=1"

qemu=$(command -v qemu-system-x86_64 || true)
[ -n "$qemu" ] || skip "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
[ -f "$kernel" ] || skip "no guest kernel at $kernel (run scripts/build-guest-kernel.sh)"
busybox=/bin/busybox
[ -x "$busybox" ] || skip "no $busybox (apt-get install busybox-static)"
if command -v file >/dev/null && ! file -L "$busybox" | grep -q 'statically linked'; then
    skip "$busybox is not statically linked (apt-get install busybox-static)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-check-boot.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- initramfs ------------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
echo "BERTH-INIT-START"
fails=0
check() {
    name=$1
    shift
    if out=$("$@" 2>&1); then
        echo "check $name: ok"
    else
        echo "check $name: FAIL: $out"
        fails=$((fails + 1))
    fi
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
check proc test -r /proc/self/status
check sysfs test -d /sys/kernel
check devtmpfs test -c /dev/null
check cpus sh -c "test \$(grep -c ^processor /proc/cpuinfo) = \"$EXPECT_CPUS\""
check tmpfs mount -t tmpfs -o size=8m tmpfs /tmp
check overlayfs sh -c 'mkdir -p /tmp/l /tmp/u /tmp/w /tmp/o && echo lower >/tmp/l/f &&
    mount -t overlay overlay -o lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w /tmp/o &&
    echo upper >/tmp/o/f && grep -q upper /tmp/u/f && grep -q lower /tmp/l/f &&
    rm /tmp/o/f && test ! -e /tmp/o/f && umount /tmp/o'
check devpts sh -c 'mkdir -p /dev/pts && mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts && test -c /dev/pts/ptmx'
check mqueue sh -c 'mkdir -p /dev/mqueue && mount -t mqueue mqueue /dev/mqueue'
check cgroup2 sh -c 'mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup &&
    for c in cpu memory pids; do grep -qw $c /sys/fs/cgroup/cgroup.controllers || { echo no $c; exit 1; }; done &&
    echo "+cpu +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control && mkdir /sys/fs/cgroup/t &&
    echo 64M >/sys/fs/cgroup/t/memory.max && echo "50000 100000" >/sys/fs/cgroup/t/cpu.max &&
    echo 10 >/sys/fs/cgroup/t/pids.max && rmdir /sys/fs/cgroup/t'
check namespaces unshare -p -n -u -i -m -f sh -c 'hostname guest && test "$(hostname)" = guest && test $$ = 1'
check userns unshare -U -r sh -c 'test "$(id -u)" = 0'
check loopback sh -c 'ip link set lo up && ip addr show lo | grep -q 127.0.0.1'
check tcp-loopback sh -c 'nc -l -p 7 -e echo pong & sleep 0.3; timeout 5 nc 127.0.0.1 7 </dev/null | grep -q pong'
check unix-socket sh -c 'syslogd -n -O /tmp/syslog & sleep 0.3; logger berth-unix-dgram; sleep 0.3; kill $!; grep -q berth-unix-dgram /tmp/syslog'
check seccomp grep -q '^Seccomp:' /proc/self/status
# AF_VSOCK is registered and /dev/vsock exists; busybox has no vsock client, and
# a host-side vhost-vsock device is not assumed, so no connection is made.
check vsock sh -c 'dmesg | grep -q "PF_VSOCK" && test -c /dev/vsock && test -d /sys/bus/virtio/drivers/vmw_vsock_virtio_transport'
check virtio-blk test -b /dev/vda
check ext4 sh -c 'mkdir -p /mnt/d && mount -t ext4 /dev/vda /mnt/d && grep -q berth-disk /mnt/d/hello && umount /mnt/d'
check virtio-net sh -c 'ip link show eth0 >/dev/null'
if [ "$fails" = 0 ]; then
    echo "BERTH-GUEST-OK $(uname -r)"
else
    echo "BERTH-GUEST-FAIL $fails check(s) failed"
fi
reboot -f
EOF
chmod +x "$root/init"
sed -i "s/\\\$EXPECT_CPUS/$smp/" "$root/init"
initrd=$work/init.cpio.gz
(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -9 >"$initrd")

# A small ext4 disk for virtio-blk (only when mke2fs is there to make it).
disk_args=()
if command -v mke2fs >/dev/null; then
    mkdir -p "$work/disk"
    echo berth-disk >"$work/disk/hello"
    truncate -s 8M "$work/disk.img"
    mke2fs -q -F -t ext4 -d "$work/disk" "$work/disk.img" >/dev/null
    # shellcheck disable=SC2054 # commas are QEMU's, not array separators
    disk_args=(-drive "file=$work/disk.img,if=none,id=d0,format=raw" -device virtio-blk-device,drive=d0)
else
    sed -i '/^check virtio-blk/d; /^check ext4/d' "$root/init"
    (cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -9 >"$initrd")
    echo "note: no mke2fs, virtio-blk/ext4 not checked"
fi

# --- boot -------------------------------------------------------------------------
log=$work/console.log
# shellcheck disable=SC2054 # commas are QEMU's, not array separators
cmd=("$qemu" -M microvm,acpi=off -accel "$accel" -cpu max -smp "$smp" -m 256M
    -nodefaults -no-user-config -nographic -serial stdio -no-reboot
    "${disk_args[@]}"
    -netdev user,id=n0,restrict=on -device virtio-net-device,netdev=n0
    -kernel "$kernel" -initrd "$initrd"
    -append "console=ttyS0 reboot=t panic=-1 $kmsg")
printf '%s: booting %s (%s, %s vCPUs)\n' "$prog" "$kernel" "$accel" "$smp"
start=$(date +%s%N)
t_init="" t_ok=""
set +e
while IFS= read -r line; do
    line=${line%$'\r'}
    now=$(date +%s%N)
    printf '  | %s\n' "$line"
    printf '%s\n' "$line" >>"$log"
    case $line in
    *BERTH-INIT-START*) t_init=$(((now - start) / 1000000)) ;;
    *BERTH-GUEST-OK*) t_ok=$(((now - start) / 1000000)) ;;
    esac
done < <(timeout "$timeout_s" "${cmd[@]}" </dev/null 2>&1; echo "QEMU-EXIT $?")
set -e
end=$(date +%s%N)
rc=$(sed -n 's/^QEMU-EXIT //p' "$log")

[ "$rc" != 124 ] || die "the guest did not finish within ${timeout_s}s"
grep -q 'BERTH-GUEST-OK' "$log" || die "no BERTH-GUEST-OK marker (qemu exit $rc)"
[ "$rc" = 0 ] || die "qemu exited with $rc after the marker (reboot -f did not end the VM cleanly)"
printf '%s: ok: to /init %s ms, to BERTH-GUEST-OK %s ms, qemu exit after %s ms (%s)\n' \
    "$prog" "$t_init" "$t_ok" "$(((end - start) / 1000000))" "$accel"
