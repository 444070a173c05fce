#!/usr/bin/env bash
# Startup benchmark: time from exec of the VMM to its exit on the guest's first instruction (a
# write to I/O port 0xf4), median over N runs, for berth-vmm and QEMU's microvm; plus berth-vmm's
# resident memory beyond guest RAM while a guest spins.
#
#   vmm/bench/startup.sh [N]        (default N=20; needs /dev/kvm; builds berth-vmm --release)
#
# The guest is a tiny ELF with a Xen PVH note (QEMU needs it) whose first instruction is
# `mov al, 0x31; out 0xf4, al`. berth-vmm ends on that write with --exit-on-port 0xf4 (exit
# status 3); QEMU's isa-debug-exit ends with status (0x31 << 1) | 1 = 99.
set -euo pipefail
N=${1:-20}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cargo build --release -q -p berth-vmm --manifest-path "$ROOT/Cargo.toml"
VMM="$ROOT/target/release/berth-vmm"

# tiny.elf: ELF64, PT_LOAD of the code at 2 MiB, PT_NOTE with XEN_ELFNOTE_PHYS32_ENTRY (18).
mkelf() { # $1 = output, $2 = code as hex
python3 - "$1" "$2" <<'PY'
import struct, sys
out, code = sys.argv[1], bytes.fromhex(sys.argv[2])
base = 0x200000
eh = b"\x7fELF\x02\x01\x01" + b"\0" * 9
eh += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, base, 64, 0, 0, 64, 56, 2, 0, 0, 0)
load = struct.pack("<IIQQQQQQ", 1, 5, 0x1000, base, base, len(code), len(code), 0x1000)
note_ph = struct.pack("<IIQQQQQQ", 4, 4, 0x100, 0, 0, 20, 20, 4)
f = bytearray(0x1000)
hdr = eh + load + note_ph
f[:len(hdr)] = hdr
f[0x100:0x114] = struct.pack("<III4sI", 4, 4, 18, b"Xen\0", base)
open(out, "wb").write(bytes(f) + code)
PY
}
mkelf "$WORK/tiny.elf" b031e6f4ebfe   # mov al,0x31; out 0xf4,al; jmp $
mkelf "$WORK/spin.elf" ebfe           # jmp $

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

bench() { # $1 = name, $2 = expected status, rest = command
  local name=$1 want=$2; shift 2
  local times=() st t0 t1
  for _ in $(seq "$N"); do
    t0=$(now_ns); set +e; "$@" >/dev/null 2>&1; st=$?; set -e; t1=$(now_ns)
    if [ "$st" != "$want" ]; then
      echo "$name: exit status $st, expected $want: cannot run the tiny guest here"; return 1
    fi
    times+=($(( (t1 - t0) / 1000 )))
  done
  printf '%-28s median %6.2f ms  (min %.2f, max %.2f, N=%d)\n' "$name" \
    "$(printf '%s\n' "${times[@]}" | median | awk '{print $1/1000}')" \
    "$(printf '%s\n' "${times[@]}" | sort -n | head -1 | awk '{print $1/1000}')" \
    "$(printf '%s\n' "${times[@]}" | sort -n | tail -1 | awk '{print $1/1000}')" "$N"
}

echo "exec to first guest instruction (VMM exits on the port write):"
bench "berth-vmm (seccomp on)" 3 "$VMM" --kernel "$WORK/tiny.elf" --mem-mib 128 --serial off --exit-on-port 0xf4
bench "berth-vmm (--no-seccomp)" 3 "$VMM" --kernel "$WORK/tiny.elf" --mem-mib 128 --serial off --exit-on-port 0xf4 --no-seccomp
if command -v qemu-system-x86_64 >/dev/null; then
  # -arch-capabilities: on a nested (PVM) KVM, QEMU aborts setting MSR 0x10a otherwise.
  bench "qemu microvm" 99 qemu-system-x86_64 -M microvm -accel kvm -m 128 \
    -cpu host,-arch-capabilities \
    -device isa-debug-exit,iobase=0xf4 -kernel "$WORK/tiny.elf" \
    -nodefaults -no-user-config -display none || true
else
  echo "qemu microvm: qemu-system-x86_64 is not installed"
fi

# Resident memory of berth-vmm beyond guest RAM: the process's Rss/Pss minus the Rss of the
# guest memfd mapping, while the spinning guest runs.
"$VMM" --kernel "$WORK/spin.elf" --mem-mib 128 --serial off &
PID=$!
sleep 0.5
awk '/^Rss:/ {rss=$2} /^Pss:/ {pss=$2} END {printf "berth-vmm process: Rss %d KiB, Pss %d KiB\n", rss, pss}' /proc/$PID/smaps_rollup
awk '/^[0-9a-f]+-[0-9a-f]+ / {guest = ($0 ~ /berth-guest-mem/)} guest && /^Rss:/ {g += $2} END {printf "guest memory touched (memfd Rss): %d KiB\n", g}' /proc/$PID/smaps
RSS=$(awk '/^Rss:/ {print $2}' /proc/$PID/smaps_rollup)
PSS=$(awk '/^Pss:/ {print $2}' /proc/$PID/smaps_rollup)
G=$(awk '/^[0-9a-f]+-[0-9a-f]+ / {guest = ($0 ~ /berth-guest-mem/)} guest && /^Rss:/ {g += $2} END {print g+0}' /proc/$PID/smaps)
echo "berth-vmm beyond guest RAM: Rss $((RSS - G)) KiB, Pss $((PSS - G)) KiB"
kill -TERM $PID; set +e; wait $PID; echo "berth-vmm after SIGTERM: exit status $?"
