//! The eBPF program (type `BPF_PROG_TYPE_CGROUP_DEVICE`) that enforces device
//! rules on cgroup v2.
//!
//! The kernel runs it on every open or mknod of a device node by a process in the
//! cgroup, with a `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32
//! minor; }` in r1, where `access_type` is `access << 16 | type` (type 1 block,
//! 2 char; access bits as in [`super::device_rules`]). Returning 1 allows, 0
//! denies with EPERM.
//!
//! The program walks the rules from last to first keeping the access bits not yet
//! decided in r3: a matching deny rule naming an undecided bit denies, a matching
//! allow rule decides the bits it names and allows once none is left; falling off
//! the end denies. That is [`super::device_rules::allows`], one bit at a time.

use super::device_rules::{DeviceKind, DeviceRule, ALL_ACCESS};

/// One instruction, laid out as the kernel's `struct bpf_insn`: opcode, then
/// destination register in the low nibble and source register in the high one,
/// a signed jump offset and a signed immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Instruction classes, operations and operand sources (linux/bpf_common.h, linux/bpf.h).
pub(crate) const BPF_LDX: u8 = 0x01;
pub(crate) const BPF_ALU: u8 = 0x04;
pub(crate) const BPF_JMP: u8 = 0x05;
pub(crate) const BPF_ALU64: u8 = 0x07;
pub(crate) const BPF_W: u8 = 0x00;
pub(crate) const BPF_MEM: u8 = 0x60;
pub(crate) const BPF_K: u8 = 0x00;
pub(crate) const BPF_X: u8 = 0x08;
pub(crate) const BPF_AND: u8 = 0x50;
pub(crate) const BPF_RSH: u8 = 0x70;
pub(crate) const BPF_MOV: u8 = 0xb0;
pub(crate) const BPF_JA: u8 = 0x00;
pub(crate) const BPF_JNE: u8 = 0x50;
pub(crate) const BPF_JSET: u8 = 0x40;
pub(crate) const BPF_EXIT: u8 = 0x90;

/// The device type in the context's low 16 bits.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// r0: the verdict; r1: the context; r2: device type; r3: undecided access bits;
/// r4: major; r5: minor.
const R0: u8 = 0;
const R1: u8 = 1;
const TYPE: u8 = 2;
const UNDECIDED: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// `dst = *(u32 *)(src + off)`.
fn load_u32(dst: u8, src: u8, off: i16) -> Insn {
    insn(BPF_LDX | BPF_W | BPF_MEM, dst, src, off, 0)
}

/// A 32-bit ALU operation with an immediate (the upper half is zeroed).
fn alu32(op: u8, dst: u8, imm: i32) -> Insn {
    insn(BPF_ALU | op | BPF_K, dst, 0, 0, imm)
}

fn mov32_reg(dst: u8, src: u8) -> Insn {
    insn(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
}

fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
}

fn jump_imm(op: u8, dst: u8, imm: i32, off: i16) -> Insn {
    insn(BPF_JMP | op | BPF_K, dst, 0, off, imm)
}

fn exit() -> Insn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

/// A jump whose offset is set once the rule's block is complete.
const TO_NEXT_RULE: i16 = i16::MIN;

/// The instructions for one rule; jumps marked [`TO_NEXT_RULE`] go past the block.
/// The second value is true when the block always returns (it matches every
/// request), so nothing after it could run.
fn rule_block(rule: &DeviceRule) -> (Vec<Insn>, bool) {
    let mut block = Vec::new();
    if let Some(kind) = rule.kind {
        let kind = match kind {
            DeviceKind::Block => DEV_BLOCK,
            DeviceKind::Char => DEV_CHAR,
        };
        block.push(jump_imm(BPF_JNE, TYPE, kind, TO_NEXT_RULE));
    }
    for (register, number) in [(MAJOR, rule.major), (MINOR, rule.minor)] {
        if let Some(number) = number {
            // Rule numbers fit in 31 bits (checked when parsed), so the
            // sign-extended immediate equals the zero-extended register.
            let imm = i32::try_from(number).unwrap_or(i32::MAX);
            block.push(jump_imm(BPF_JNE, register, imm, TO_NEXT_RULE));
        }
    }
    let conditional = !block.is_empty();
    let access = i32::from(rule.access);
    if rule.allow {
        // Every undecided bit this rule names is allowed; allow once none is left.
        block.push(alu32(
            BPF_AND,
            UNDECIDED,
            i32::from(!rule.access & ALL_ACCESS),
        ));
        block.push(jump_imm(BPF_JNE, UNDECIDED, 0, TO_NEXT_RULE));
        block.push(mov64_imm(R0, 1));
        block.push(exit());
        (block, false)
    } else if rule.access == ALL_ACCESS {
        // Some bit is always still undecided, so a full deny needs no test.
        block.push(mov64_imm(R0, 0));
        block.push(exit());
        (block, !conditional)
    } else {
        block.push(jump_imm(BPF_JSET, UNDECIDED, access, 1));
        block.push(jump_imm(BPF_JA, 0, 0, TO_NEXT_RULE));
        block.push(mov64_imm(R0, 0));
        block.push(exit());
        (block, false)
    }
}

/// The program for `rules` (as from [`super::device_rules::effective_rules`]):
/// the last matching rule decides, and no match denies.
pub(crate) fn build(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut program = vec![
        load_u32(TYPE, R1, 0),
        mov32_reg(UNDECIDED, TYPE),
        alu32(BPF_RSH, UNDECIDED, 16),
        alu32(BPF_AND, TYPE, 0xffff),
        load_u32(MAJOR, R1, 4),
        load_u32(MINOR, R1, 8),
    ];
    for rule in rules.iter().rev() {
        let (mut block, always_returns) = rule_block(rule);
        let len = block.len();
        for (index, insn) in block.iter_mut().enumerate() {
            if insn.off == TO_NEXT_RULE {
                // Offsets count from the next instruction; blocks are a few instructions.
                insn.off = i16::try_from(len - index - 1).unwrap_or(i16::MAX);
            }
        }
        program.extend(block);
        if always_returns {
            // The verifier rejects unreachable instructions.
            return program;
        }
    }
    program.push(mov64_imm(R0, 0));
    program.push(exit());
    program
}

#[cfg(test)]
#[path = "device_program_tests.rs"]
mod tests;
