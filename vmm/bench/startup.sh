#!/usr/bin/env bash
# Startup benchmark: time from exec of the VMM to the guest's first instruction, median over N
# runs, for berth-vmm and QEMU's microvm; plus berth-vmm's resident memory beyond guest RAM while
# a guest spins.
#
#   vmm/bench/startup.sh [N]        (default N=30; needs /dev/kvm; builds berth-vmm --release)
#
# The guest is a tiny ELF with a Xen PVH note (QEMU needs it) whose first instruction writes one
# byte to COM1 (`mov dx, 0x3f8; mov al, '!'; out dx, al`) and then ends the VM with a write to
# port 0xf4. Both VMMs copy the byte to their stdout, a pipe that first_insn.py reads: the clock
# runs from just before the fork/exec to the byte's arrival ("first insn"), and on to the exit
# ("exit": this includes tearing the VM down, which on a nested KVM host costs tens of ms in the
# kernel when the fd of a VM with an in-kernel irqchip is closed). berth-vmm ends on the port
# write with --exit-on-port 0xf4 (exit status 3); QEMU's isa-debug-exit ends with status
# (0x31 << 1) | 1 = 99.
set -euo pipefail
N=${1:-30}
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
mkelf "$WORK/tiny.elf" 66baf803b021eeb031e6f4ebfe   # mov dx,0x3f8; mov al,"!"; out dx,al; mov al,0x31; out 0xf4,al; jmp $
mkelf "$WORK/spin.elf" ebfe           # jmp $

TIMER="$ROOT/vmm/bench/first_insn.py"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
bench() { # $1 = name, $2 = expected status, rest = command
  local name=$1 want=$2; shift 2
  local out
  if ! out=$(python3 "$TIMER" "$N" "$@"); then
    echo "$name: no serial output: cannot run the tiny guest here"; return 1
  fi
  if echo "$out" | awk -v w="$want" '$3 != w {bad=1} END {exit !bad}'; then
    echo "$name: unexpected exit status: $(echo "$out" | awk '{print $3}' | sort -u | tr '\n' ' ')"
    return 1
  fi
  printf '%-26s first insn median %6.2f ms (min %6.2f)   exit median %6.2f ms  (N=%d)\n' "$name" \
    "$(echo "$out" | awk '{print $1}' | median | awk '{print $1/1000}')" \
    "$(echo "$out" | awk '{print $1}' | sort -n | head -1 | awk '{print $1/1000}')" \
    "$(echo "$out" | awk '{print $2}' | median | awk '{print $1/1000}')" "$N"
}

echo "exec to first guest instruction, and to exit (load average: $(cut -d' ' -f1-3 /proc/loadavg)):"
# The floor: fork/exec of a program that writes one byte and exits.
bench "floor (/bin/echo)" 0 /bin/echo -n '!'
bench "berth-vmm (seccomp on)" 3 "$VMM" --kernel "$WORK/tiny.elf" --mem-mib 128 --serial stdout --exit-on-port 0xf4
bench "berth-vmm (--no-seccomp)" 3 "$VMM" --kernel "$WORK/tiny.elf" --mem-mib 128 --serial stdout --exit-on-port 0xf4 --no-seccomp
if command -v qemu-system-x86_64 >/dev/null; then
  # -arch-capabilities: on a nested (PVM) KVM, QEMU aborts setting MSR 0x10a otherwise.
  bench "qemu microvm" 99 qemu-system-x86_64 -M microvm -accel kvm -m 128 \
    -cpu host,-arch-capabilities \
    -device isa-debug-exit,iobase=0xf4 -kernel "$WORK/tiny.elf" \
    -nodefaults -no-user-config -display none -serial stdio || true
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
