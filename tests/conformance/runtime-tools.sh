#!/usr/bin/env bash
# Run the OCI runtime validation suite (opencontainers/runtime-tools: the
# validation/<name>/ programs and cmd/runtimetest) against berth-runtime and
# compare the failures with tests/conformance/known-failures.txt.
#
#   tests/conformance/runtime-tools.sh [--mode ns|vm] [NAME...]
#
# NAME selects validation programs (default: every validation/<name>/ in the
# source tree). Needs root, Go (Debian's golang-go and the golang-*-dev packages
# listed in README.md), busybox-static, util-linux (unshare) and a built
# target/debug/berth-runtime.
#
# Environment:
#   RUNTIME_TOOLS_SRC  runtime-tools source tree (default ~/.cache/berth/runtime-tools);
#                      when absent it is cloned at RUNTIME_TOOLS_COMMIT, which
#                      needs network access to GitHub (and the Go module proxy
#                      for a tree with go.mod but no vendor/)
#   BERTH_RUNTIME_BIN  the runtime under test (default target/debug/berth-runtime)
#   BERTH_RUNTIME_MODE ns or vm (default ns; --mode wins)
#   CONFORMANCE_OUT    where logs and the summary go (default target/conformance/<mode>)
#   CONFORMANCE_TIMEOUT seconds one program may run (default 300)
#   CONFORMANCE_RETRIES times a program with an unexpected failure runs again (default 1)
#
# Exit status: 0 when every failure is listed in known-failures.txt (or the
# suite was skipped, with "skipped: <reason>"), 1 on an unexpected failure,
# 2 on a usage or set-up error.
set -euo pipefail

RUNTIME_TOOLS_REPO=https://github.com/opencontainers/runtime-tools
# The upstream commit the default source tree follows (validation/util and the
# test programs as of the io/ioutil -> os clean-up, before the move to
# runtime-spec v1.1 and Go 1.21); it still builds with Debian 12's Go 1.19 and
# golang-github-opencontainers-specs-dev.
RUNTIME_TOOLS_COMMIT=${RUNTIME_TOOLS_COMMIT:-a469c0fa3bb1dc5c80cf5e04adf1cda03e5a8097}

repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/tests/conformance
mode=${BERTH_RUNTIME_MODE:-ns}
selected=()

usage() {
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --mode) mode=${2:?--mode needs ns or vm}; shift 2 ;;
        --mode=*) mode=${1#--mode=}; shift ;;
        -h | --help) usage ;;
        -*) echo "runtime-tools.sh: unknown option $1" >&2; usage ;;
        *) selected+=("$1"); shift ;;
    esac
done
case "$mode" in ns | vm) ;; *) echo "runtime-tools.sh: --mode must be ns or vm, not $mode" >&2; exit 2 ;; esac

skip() {
    echo "skipped: $*"
    exit 0
}

src=${RUNTIME_TOOLS_SRC:-$HOME/.cache/berth/runtime-tools}
runtime_bin=${BERTH_RUNTIME_BIN:-$repo/target/debug/berth-runtime}
out=${CONFORMANCE_OUT:-$repo/target/conformance/$mode}
per_test_timeout=${CONFORMANCE_TIMEOUT:-300}
known_file=$here/known-failures.txt

# --- prerequisites ---------------------------------------------------------

[ "$(id -u)" -eq 0 ] || skip "the OCI validation suite creates namespaces and cgroups: run it as root"
command -v go >/dev/null || skip "no Go toolchain (apt-get install golang-go and the packages README.md lists)"
command -v unshare >/dev/null || skip "no unshare (util-linux), which the linux_ns_path tests use"
if [ ! -x "$runtime_bin" ]; then
    echo "runtime-tools.sh: $runtime_bin not found; run 'cargo build -p berth' first" >&2
    exit 2
fi

fetch_source() {
    [ -d "$src/validation" ] && return 0
    command -v git >/dev/null || skip "no runtime-tools source at $src and no git to clone it"
    echo "runtime-tools.sh: cloning $RUNTIME_TOOLS_REPO at $RUNTIME_TOOLS_COMMIT into $src" >&2
    local tmp=$src.clone.$$
    rm -rf "$tmp"
    if ! timeout 120 git clone --quiet "$RUNTIME_TOOLS_REPO" "$tmp" 2>/dev/null ||
        ! git -C "$tmp" checkout --quiet "$RUNTIME_TOOLS_COMMIT" 2>/dev/null; then
        rm -rf "$tmp"
        skip "no runtime-tools source at $src and $RUNTIME_TOOLS_REPO cannot be cloned here (set RUNTIME_TOOLS_SRC)"
    fi
    mkdir -p "$(dirname "$src")"
    mv "$tmp" "$src"
}
fetch_source
[ -d "$src/cmd/runtimetest" ] || skip "$src has no cmd/runtimetest: not a runtime-tools source tree"

# --- build -------------------------------------------------------------------

build=$repo/target/conformance/build
bin=$build/bin
mkdir -p "$bin"

# How to build: vendored modules, plain modules (needs the module proxy), or
# GOPATH mode against Debian's golang-*-dev packages in /usr/share/gocode.
go_env=()
go_flags=()
if [ -f "$src/go.mod" ] && [ -f "$src/vendor/modules.txt" ]; then
    go_flags=(-mod=vendor)
elif [ -f "$src/go.mod" ]; then
    go_flags=(-mod=mod)
else
    gopath=$build/gopath
    mkdir -p "$gopath/src/github.com/opencontainers"
    ln -sfn "$src" "$gopath/src/github.com/opencontainers/runtime-tools"
    go_env=(GO111MODULE=off "GOPATH=$gopath:/usr/share/gocode")
fi
pkg_root() {
    if [ "${#go_env[@]}" -gt 0 ]; then
        echo "$build/gopath/src/github.com/opencontainers/runtime-tools"
    else
        echo "$src"
    fi
}

# go_build OUT PKG [extra env...]: rebuild OUT when a .go file of the tree is newer.
go_build() {
    local out_file=$1 pkg=$2
    shift 2
    if [ -x "$out_file" ] && [ -z "$(find -L "$src" -name '*.go' -newer "$out_file" -print -quit)" ]; then
        return 0
    fi
    (cd "$(pkg_root)" && env "${go_env[@]}" "$@" nice go build -p 1 "${go_flags[@]}" -o "$out_file" "$pkg")
}

if [ "${#selected[@]}" -eq 0 ]; then
    for dir in "$src"/validation/*/; do
        name=$(basename "$dir")
        [ "$name" = util ] && continue
        ls "$dir"*.go >/dev/null 2>&1 && selected+=("$name")
    done
fi

echo "runtime-tools.sh: building runtimetest and ${#selected[@]} validation programs" >&2
# runtimetest runs inside the container's busybox root, which has no libc.
go_build "$bin/runtimetest" ./cmd/runtimetest CGO_ENABLED=0
for name in "${selected[@]}"; do
    [ -d "$src/validation/$name" ] || { echo "runtime-tools.sh: no validation/$name in $src" >&2; exit 2; }
    go_build "$bin/$name.t" "./validation/$name"
done

# --- test environment --------------------------------------------------------

work=$(mktemp -d /tmp/berth-conformance.XXXXXX)
state=$work/state
cleanup() {
    leftover_containers
    leftover_cgroups
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$state" "$work/tmp" "$out"
rm -f "$out"/*.tap "$out"/*.stderr "$out"/*.try* "$out"/summary.txt

arch=$(go env GOARCH)
rootfs=$work/rootfs-$arch.tar.gz
if [ -f "$src/rootfs-$arch.tar.gz" ]; then
    cp "$src/rootfs-$arch.tar.gz" "$rootfs"
else
    [ -x /bin/busybox ] || skip "no rootfs-$arch.tar.gz in $src and no /bin/busybox (apt-get install busybox-static) to build one"
    "$repo/tests/images/make-busybox-rootfs.sh" "$work/rootfs.tar" >/dev/null
    gzip -c "$work/rootfs.tar" >"$rootfs"
    rm -f "$work/rootfs.tar"
fi
cp "$bin/runtimetest" "$work/runtimetest"

# The suite calls $RUNTIME with runc's command line; the wrapper keeps its
# containers in a private state directory so leftovers can be found and removed.
wrapper=$work/berth-runtime
cat >"$wrapper" <<EOF
#!/bin/sh
BERTH_RUNTIME_MODE=$mode exec "$runtime_bin" --root "$state" "\$@"
EOF
chmod +x "$wrapper"

leftover_containers() {
    local id
    [ -d "$state" ] || return 0
    for id in $("$wrapper" list -q 2>/dev/null); do
        echo "runtime-tools.sh: removing leftover container $id" >&2
        "$wrapper" delete --force "$id" >/dev/null 2>&1 || true
    done
}

# The cgroups the cgroup tests name (cgroups.AbsCgroupPath, RelCgroupPath):
# report and remove what a runtime left behind (rmdir only takes empty ones).
leftover_cgroups() {
    local dir
    for dir in /sys/fs/cgroup/*/cgrouptest /sys/fs/cgroup/*/testdir/cgrouptest/container \
        /sys/fs/cgroup/*/testdir/cgrouptest /sys/fs/cgroup/*/testdir /sys/fs/cgroup/cgrouptest \
        /sys/fs/cgroup/testdir/cgrouptest/container /sys/fs/cgroup/testdir/cgrouptest /sys/fs/cgroup/testdir; do
        [ -d "$dir" ] || continue
        echo "runtime-tools.sh: leftover cgroup $dir" >&2
        rmdir "$dir" 2>/dev/null || true
    done
}

# --- known failures ------------------------------------------------------------

trim() {
    sed 's/^[[:space:]]*//; s/[[:space:]]*$//' <<<"$1"
}

# Lines: "[ns:|vm:]program | assertion (a glob) | reason"; '#' starts a comment.
known_programs=()
known_patterns=()
known_hits=()
if [ -f "$known_file" ]; then
    while IFS= read -r line; do
        line=${line%%$'\r'}
        [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
        IFS='|' read -r prog pattern _reason <<<"$line"
        prog=$(trim "$prog")
        pattern=$(trim "$pattern")
        case "$prog" in
            ns:* | vm:*) [ "${prog%%:*}" = "$mode" ] || continue; prog=${prog#*:} ;;
        esac
        known_programs+=("$prog")
        known_patterns+=("$pattern")
        known_hits+=(0)
    done <"$known_file"
fi

# is_known PROGRAM ASSERTION [dry]: 0 when a known-failures line matches (and,
# unless "dry", count the hit).
is_known() {
    local i
    for i in "${!known_programs[@]}"; do
        [ "${known_programs[$i]}" = "$1" ] || continue
        # shellcheck disable=SC2053 # the pattern is a glob on purpose
        if [[ "$2" == ${known_patterns[$i]} ]]; then
            [ "${3:-}" = dry ] || known_hits[i]=$((known_hits[i] + 1))
            return 0
        fi
    done
    return 1
}

# Random parts of assertion names (temp dirs, UUIDs) become fixed tokens.
normalize() {
    sed -E 's/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/<id>/g;
            s/(target|mount|test|example|ocitest|oci-pid|tmp)[0-9]{3,}/\1<n>/g'
}

# --- run -------------------------------------------------------------------------

# run_program NAME: run one validation program; its TAP goes to $out/NAME.tap.
run_program() {
    local name=$1 status=0
    (cd "$work" && TMPDIR=$work/tmp RUNTIME=$wrapper timeout --kill-after=10 "$per_test_timeout" \
        "$bin/$name.t" >"$out/$name.tap" 2>"$out/$name.stderr") || status=$?
    leftover_containers 2>>"$out/$name.stderr"
    exit_status=$status
}

# parse_program NAME: count $out/NAME.tap into pass/skipped/todo and failures[].
parse_program() {
    local tap=$out/$1.tap asserted=0 line desc
    pass=0 skipped=0 todo=0
    failures=()
    while IFS= read -r line; do
        [[ "$line" =~ ^(not\ )?ok\ [0-9]+(\ -\ |\ )?(.*)$ ]] || continue
        asserted=$((asserted + 1))
        desc=${BASH_REMATCH[3]}
        if [[ "$desc" == "# SKIP"* ]]; then
            skipped=$((skipped + 1))
        elif [[ "$desc" == "# TODO"* ]]; then
            todo=$((todo + 1))
        elif [ -n "${BASH_REMATCH[1]}" ]; then
            failures+=("$(normalize <<<"$desc")")
        else
            pass=$((pass + 1))
        fi
    done <"$tap"
    # Programs that report through a YAML "error:" block instead of a test point.
    if [ "$asserted" -eq 0 ] && grep -q '^ *"error": ' "$tap"; then
        failures+=("diagnostic: $(grep -m1 '^ *"error": ' "$tap" | sed -E 's/^ *"error": "//; s/",?$//' | normalize | cut -c1-200)")
    fi
    if [ "$exit_status" -eq 124 ] || [ "$exit_status" -eq 137 ]; then
        failures+=("timed out after ${per_test_timeout}s")
    elif [ "$exit_status" -ne 0 ]; then
        failures+=("exit status $exit_status")
    fi
}

# unexpected_in NAME: 0 when failures[] holds one that known-failures.txt lacks.
unexpected_in() {
    local f
    for f in ${failures[@]+"${failures[@]}"}; do
        is_known "$1" "$f" dry || return 0
    done
    return 1
}

# Some programs race with the container (a signal sent before the shell set its
# trap, a poststart hook writing before the process): one with an unexpected
# failure runs again, up to CONFORMANCE_RETRIES times (default 1).
retries=${CONFORMANCE_RETRIES:-1}
total_pass=0 total_fail=0 total_known=0 total_skip=0 total_todo=0
unexpected=()
flaky=()
printf '%-36s %5s %5s %5s %5s %5s\n' PROGRAM PASS FAIL KNOWN SKIP TODO >"$out/summary.txt"

for name in "${selected[@]}"; do
    echo "runtime-tools.sh: [$mode] $name" >&2
    run_program "$name"
    parse_program "$name"
    attempt=0
    while [ "$attempt" -lt "$retries" ] && unexpected_in "$name"; do
        attempt=$((attempt + 1))
        mv "$out/$name.tap" "$out/$name.tap.try$attempt"
        mv "$out/$name.stderr" "$out/$name.stderr.try$attempt"
        echo "runtime-tools.sh: [$mode] $name again (unexpected failure, log in $name.tap.try$attempt)" >&2
        run_program "$name"
        parse_program "$name"
        unexpected_in "$name" || flaky+=("$name")
    done

    fail=0 known=0
    for f in ${failures[@]+"${failures[@]}"}; do
        if is_known "$name" "$f"; then
            known=$((known + 1))
        else
            fail=$((fail + 1))
            unexpected+=("$name: $f")
        fi
    done
    printf '%-36s %5d %5d %5d %5d %5d\n' "$name" "$pass" "$fail" "$known" "$skipped" "$todo" >>"$out/summary.txt"
    total_pass=$((total_pass + pass)) total_fail=$((total_fail + fail)) total_known=$((total_known + known))
    total_skip=$((total_skip + skipped)) total_todo=$((total_todo + todo))
done

cat "$out/summary.txt"
if [ "${#unexpected[@]}" -gt 0 ]; then
    echo
    echo "unexpected failures (not in tests/conformance/known-failures.txt; count, program: assertion):"
    printf '%s\n' "${unexpected[@]}" | sort | uniq -c | sed 's/^ */  /'
fi
stale=()
for i in "${!known_programs[@]}"; do
    for name in "${selected[@]}"; do
        if [ "${known_programs[$i]}" = "$name" ] && [ "${known_hits[$i]}" -eq 0 ]; then
            stale+=("${known_programs[$i]} | ${known_patterns[$i]}")
        fi
    done
done
if [ "${#stale[@]}" -gt 0 ]; then
    echo
    echo "known failures that did not happen (remove them from known-failures.txt once fixed):"
    printf '  %s\n' "${stale[@]}"
fi
if [ "${#flaky[@]}" -gt 0 ]; then
    echo
    echo "passed only on a retry (racy test or runtime; first logs kept as *.try1): ${flaky[*]}"
fi
echo
echo "logs: $out"
echo "conformance ($mode): $total_pass passed, $total_fail failed, $total_known known failures, $total_skip skipped, $total_todo todo"
[ "$total_fail" -eq 0 ]
