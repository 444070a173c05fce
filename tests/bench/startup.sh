#!/usr/bin/env bash
# Container start-up latency: berth vs runc, same busybox root filesystem.
#
#   tests/bench/startup.sh [N]        (or: ./scripts/bench.sh startup [N])
#
# Times N (default 30) runs of
#   berth run --rm busybox true                  (release build, own store)
# against
#   runc run --bundle B bench-startup            (runc spec, args ["true"])
# on an unpacked bundle of the same busybox rootfs, then prints the median
# and mean of each and the ratio berth/runc. `runc run` in the foreground
# deletes the container when its process exits, so each run starts from
# scratch like `berth run --rm`. Uses hyperfine when installed (its JSON
# export gives every run's time), else times the runs itself. Needs root.
#
# Not part of the test suite.
set -euo pipefail

cd "$(dirname "$0")/../.."
repo=$(pwd)
n=${1:-30}

die() {
    printf 'startup.sh: %s\n' "$*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "run me as root"
command -v runc >/dev/null || die "runc not installed (./scripts/setup.sh installs it)"
command -v python3 >/dev/null || die "python3 not installed"

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
berth=${BERTH_BIN:-$repo/target/release/berth}
if [ -z "${BERTH_BIN:-}" ]; then
    cargo build --release --workspace --quiet
fi
[ -x "$berth" ] || die "$berth not found"

work=$(mktemp -d /tmp/berth-bench.XXXXXX)
cleanup() {
    "$berth" --root "$work/berth-root" rm -f $("$berth" --root "$work/berth-root" ps -aq 2>/dev/null) \
        >/dev/null 2>&1 || true
    runc --root "$work/runc-state" delete --force bench-startup >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> preparing busybox image and runc bundle in $work"
tests/images/make-busybox-rootfs.sh "$work/busybox.tar"
"$berth" --root "$work/berth-root" import "$work/busybox.tar" busybox:latest \
    --change 'CMD ["sh"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' >/dev/null
mkdir -p "$work/bundle/rootfs"
tar -xf "$work/busybox.tar" -C "$work/bundle/rootfs"
(cd "$work/bundle" && runc spec)
python3 - "$work/bundle/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
with open(path) as f:
    config = json.load(f)
config["process"]["args"] = ["true"]
config["process"]["terminal"] = False
with open(path, "w") as f:
    json.dump(config, f, indent=2)
EOF

berth_cmd="$berth --root $work/berth-root run --rm busybox true"
runc_cmd="runc --root $work/runc-state run --bundle $work/bundle bench-startup"

# Both must work before they are timed.
out=$($berth_cmd 2>&1) || die "berth failed: $out"
out=$($runc_cmd 2>&1) || die "runc failed: $out"

json=$work/times.json
if command -v hyperfine >/dev/null; then
    echo "==> hyperfine, $n runs each"
    hyperfine --shell=none --warmup 3 --runs "$n" --export-json "$json" \
        --command-name berth "$berth_cmd" \
        --command-name runc "$runc_cmd"
else
    echo "==> hyperfine not installed; timing $n runs each myself"
    python3 - "$json" "$n" "$berth_cmd" "$runc_cmd" <<'EOF'
import json, shlex, subprocess, sys, time
out, n, cmds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
results = []
for name, cmd in zip(["berth", "runc"], cmds):
    argv = shlex.split(cmd)
    for _ in range(3):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    results.append({"command": name, "times": times})
with open(out, "w") as f:
    json.dump({"results": results}, f)
EOF
fi

python3 - "$json" <<'EOF'
import json, statistics, sys
with open(sys.argv[1]) as f:
    results = json.load(f)["results"]
stats = {}
print()
print(f"{'':8} {'runs':>5} {'median':>10} {'mean':>10} {'min':>10} {'max':>10}")
for r in results:
    t = r["times"]
    name = r["command"]
    stats[name] = (statistics.median(t), statistics.mean(t))
    print(f"{name:8} {len(t):5} {statistics.median(t)*1000:8.1f}ms {statistics.mean(t)*1000:8.1f}ms "
          f"{min(t)*1000:8.1f}ms {max(t)*1000:8.1f}ms")
b, r = stats["berth"], stats["runc"]
print()
print(f"berth/runc: median {b[0]/r[0]:.2f}x, mean {b[1]/r[1]:.2f}x")
EOF
