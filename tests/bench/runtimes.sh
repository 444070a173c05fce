#!/usr/bin/env bash
# The same container in each runtime, in one run:
#
#   tests/bench/runtimes.sh [N]        (or: ./scripts/bench.sh runtimes [N])
#
# Times N (default 5) runs of `berth run --rm busybox true` with --runtime=ns, with
# --runtime=vm on QEMU (the accelerator the probe picks: KVM where a guest boots, else
# TCG), and with --runtime=vm on the built-in VMM where it can boot a guest (it says why
# not otherwise); prints medians. Then starts one VM running `sleep` and reports the host
# memory it costs: the PSS of the VMM process (and of the vsock daemon), from
# /proc/PID/smaps_rollup. Release build, own berth root. Needs root. Not part of the tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-5}
[ "$(id -u)" -eq 0 ] || { echo "runtimes.sh: run me as root" >&2; exit 1; }

berth=${BERTH_BIN:-target/release/berth}
[ -n "${BERTH_BIN:-}" ] || cargo build --release -p berth-shim -p berth-vmm --quiet
work=$(mktemp -d /tmp/berth-bench-rt.XXXXXX)
root=$work/root
cleanup() {
    "$berth" --root "$root" rm -f $("$berth" --root "$root" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

tests/images/make-busybox-rootfs.sh "$work/busybox.tar"
"$berth" --root "$root" import "$work/busybox.tar" busybox:latest --change 'CMD ["sh"]' >/dev/null

# median_ms LABEL ARGS... : runs `berth run --rm ARGS busybox true` N times.
median_ms() {
    local label=$1
    shift
    python3 - "$n" "$berth" "$root" "$label" "$@" <<'PY'
import statistics, subprocess, sys, time
n, berth, root, label, extra = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
times = []
for _ in range(n):
    start = time.perf_counter()
    done = subprocess.run([berth, "--root", root, "run", "--rm", *extra, "busybox", "true"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    times.append((time.perf_counter() - start) * 1000)
    if done.returncode != 0:
        print(f"{label:<22} failed: {done.stderr.strip()}")
        sys.exit(0)
print(f"{label:<22} median {statistics.median(times):8.1f} ms   min {min(times):8.1f}   max {max(times):8.1f}   ({n} runs)")
PY
}

echo "== time to exit of: berth run --rm busybox true"
median_ms "ns" --runtime=ns
median_ms "vm / qemu" --runtime=vm --hypervisor=qemu
builtin_why=$(python3 - <<'PY'
import re
flags = open("/proc/cpuinfo").read()
print("" if re.search(r"\b(vmx|svm)\b", flags) else "no vmx/svm in /proc/cpuinfo: this host cannot boot a guest kernel under KVM")
PY
)
if [ -z "$builtin_why" ]; then
    median_ms "vm / builtin" --runtime=vm --hypervisor=builtin
else
    echo "vm / builtin           skipped: $builtin_why"
fi
grep -h '"qemu_' "$root/vm-probe.json" 2>/dev/null | sed 's/^ */probe: /' || true

echo "== host memory of one running VM (busybox sleep, default VM size)"
id=$("$berth" --root "$root" run -d --runtime=vm busybox sleep 600)
pid=$("$berth" --root "$root" inspect "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["State"]["Pid"])')
sleep 2
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
echo "VMM (pid $pid, $(tr '\0' ' ' </proc/$pid/cmdline | cut -c1-40)...): PSS $(pss "$pid") KiB"
dir=$(readlink -f "/proc/$pid/cwd")
for daemon in $(pgrep -f vhost-device-vsock || true); do
    if [ "$(readlink -f "/proc/$daemon/cwd" 2>/dev/null)" = "$dir" ] ||
        tr '\0' ' ' <"/proc/$daemon/cmdline" | grep -q "$id"; then
        echo "vsock daemon (pid $daemon): PSS $(pss "$daemon") KiB"
    fi
done
"$berth" --root "$root" rm -f "$id" >/dev/null
