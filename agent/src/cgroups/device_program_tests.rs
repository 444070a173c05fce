use super::*;
use crate::cgroups::device_rules::{allows, MKNOD, READ, WRITE};

/// Run `program` the way the kernel would for one request, allowing only the
/// instructions the builder emits; panics on anything else, on a jump out of the
/// program and on a read of an unset register.
fn run(program: &[Insn], kind: DeviceKind, major: u32, minor: u32, access: u8) -> bool {
    let dev_type = match kind {
        DeviceKind::Block => 1,
        DeviceKind::Char => 2,
    };
    let ctx = [(u32::from(access) << 16) | dev_type, major, minor];
    let mut regs: [Option<u64>; 11] = [None; 11];
    regs[1] = Some(0xdead_0000); // the context pointer: only loads through it are allowed
    let mut pc = 0usize;
    for _ in 0..10_000 {
        let insn = program.get(pc).expect("pc inside the program");
        let dst = usize::from(insn.regs & 0xf);
        let src = usize::from(insn.regs >> 4);
        let read = |r: usize| regs[r].unwrap_or_else(|| panic!("r{r} read before set at {pc}"));
        let jump = |taken: bool| {
            if taken {
                let target = pc as i64 + 1 + i64::from(insn.off);
                usize::try_from(target).expect("jump before the start")
            } else {
                pc + 1
            }
        };
        let imm = i64::from(insn.imm) as u64;
        pc = match insn.code {
            0x61 => {
                assert_eq!((src, read(src)), (1, 0xdead_0000), "load not from ctx");
                let field = usize::try_from(insn.off).expect("offset") / 4;
                assert_eq!(insn.off % 4, 0);
                regs[dst] = Some(u64::from(ctx[field]));
                pc + 1
            }
            0xbc => {
                regs[dst] = Some(read(src) & 0xffff_ffff);
                pc + 1
            }
            0x74 => {
                regs[dst] = Some((read(dst) & 0xffff_ffff) >> insn.imm);
                pc + 1
            }
            0x54 => {
                regs[dst] = Some(read(dst) & imm & 0xffff_ffff);
                pc + 1
            }
            0xb7 => {
                regs[dst] = Some(imm);
                pc + 1
            }
            0x05 => jump(true),
            0x55 => jump(read(dst) != imm),
            0x45 => jump(read(dst) & imm != 0),
            0x95 => {
                return match read(0) {
                    0 => false,
                    1 => true,
                    other => panic!("returned {other}"),
                }
            }
            other => panic!("unexpected opcode {other:#x} at {pc}"),
        };
    }
    panic!("no exit after 10000 steps");
}

/// Like the verifier's first pass: every instruction reachable, every jump inside.
fn assert_well_formed(program: &[Insn]) {
    let mut reached = vec![false; program.len()];
    let mut todo = vec![0usize];
    while let Some(pc) = todo.pop() {
        if std::mem::replace(&mut reached[pc], true) {
            continue;
        }
        let insn = program[pc];
        let target = usize::try_from(pc as i64 + 1 + i64::from(insn.off)).expect("target");
        match insn.code {
            0x95 => {}
            0x05 => todo.push(target),
            0x55 | 0x45 => todo.extend([pc + 1, target]),
            _ => todo.push(pc + 1),
        }
        assert!(todo.iter().all(|t| *t < program.len()), "jump out at {pc}");
    }
    let unreached: Vec<usize> = (0..program.len()).filter(|pc| !reached[*pc]).collect();
    assert!(unreached.is_empty(), "unreachable {unreached:?}");
}

fn rule(
    allow: bool,
    kind: Option<DeviceKind>,
    major: Option<u32>,
    minor: Option<u32>,
    access: u8,
) -> DeviceRule {
    DeviceRule {
        allow,
        kind,
        major,
        minor,
        access,
    }
}

#[test]
fn encodes_a_char_allow_rule_as_hand_assembled() {
    let program = build(&[rule(true, Some(DeviceKind::Char), Some(1), Some(3), READ)]);
    let i = |code, regs, off, imm| Insn {
        code,
        regs,
        off,
        imm,
    };
    assert_eq!(
        program,
        vec![
            i(0x61, 0x12, 0, 0),      // r2 = ctx->access_type
            i(0xbc, 0x23, 0, 0),      // w3 = w2
            i(0x74, 0x03, 0, 16),     // w3 >>= 16
            i(0x54, 0x02, 0, 0xffff), // w2 &= 0xffff
            i(0x61, 0x14, 4, 0),      // r4 = ctx->major
            i(0x61, 0x15, 8, 0),      // r5 = ctx->minor
            i(0x55, 0x02, 6, 2),      // if r2 != char goto next
            i(0x55, 0x04, 5, 1),      // if r4 != 1 goto next
            i(0x55, 0x05, 4, 3),      // if r5 != 3 goto next
            i(0x54, 0x03, 0, 0b101),  // w3 &= ~read
            i(0x55, 0x03, 2, 0),      // if r3 != 0 goto next
            i(0xb7, 0x00, 0, 1),      // r0 = 1
            i(0x95, 0x00, 0, 0),      // exit
            i(0xb7, 0x00, 0, 0),      // next: r0 = 0
            i(0x95, 0x00, 0, 0),      // exit
        ]
    );
    assert_eq!(std::mem::size_of::<Insn>(), 8);
}

#[test]
fn a_full_wildcard_deny_ends_the_program() {
    // Rules run last to first: the leading deny-all is the final block and
    // nothing may follow it, not even the default verdict.
    let rules = [
        rule(false, None, None, None, ALL_ACCESS),
        rule(true, Some(DeviceKind::Char), Some(1), Some(3), ALL_ACCESS),
    ];
    let program = build(&rules);
    assert_well_formed(&program);
    assert_eq!(&program[program.len() - 2..], &[mov64_imm(R0, 0), exit()]);
    assert!(run(&program, DeviceKind::Char, 1, 3, READ | WRITE));
    assert!(!run(&program, DeviceKind::Char, 1, 5, READ));
    // Nothing after a block that always returns.
    let program = build(&[rules[1], rules[0]]);
    assert_eq!(program.len(), 6 + 2);
    assert!(!run(&program, DeviceKind::Char, 1, 3, READ));
}

#[test]
fn last_match_wins_for_each_access() {
    let rules = [
        rule(true, None, None, None, ALL_ACCESS),
        rule(false, Some(DeviceKind::Char), Some(1), None, WRITE),
        rule(true, Some(DeviceKind::Char), Some(1), Some(9), WRITE),
    ];
    let program = build(&rules);
    assert_well_formed(&program);
    assert!(run(&program, DeviceKind::Char, 1, 5, READ));
    assert!(!run(&program, DeviceKind::Char, 1, 5, WRITE));
    assert!(!run(&program, DeviceKind::Char, 1, 5, READ | WRITE));
    assert!(run(&program, DeviceKind::Char, 1, 9, READ | WRITE));
    assert!(run(&program, DeviceKind::Block, 1, 5, WRITE));
    assert!(run(&program, DeviceKind::Char, 2, 5, WRITE | MKNOD));
}

/// xorshift64*, so the cases are the same on every run.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::try_from(self.below(items.len() as u64)).expect("index")]
    }
}

#[test]
fn agrees_with_the_rule_semantics_on_random_rule_sets() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let kinds = [None, Some(DeviceKind::Block), Some(DeviceKind::Char)];
    let numbers = [None, Some(0), Some(1), Some(2), Some(136)];
    let mut denied_somewhere = 0;
    for _ in 0..400 {
        let count = random.below(7);
        let mut rules: Vec<DeviceRule> = (0..count)
            .map(|_| {
                rule(
                    random.below(2) == 0,
                    random.pick(&kinds),
                    random.pick(&numbers),
                    random.pick(&numbers),
                    1 + u8::try_from(random.below(7)).expect("access"),
                )
            })
            .collect();
        if random.below(3) == 0 {
            rules.extend_from_slice(crate::cgroups::device_rules::ALWAYS_ALLOWED);
        }
        let program = build(&rules);
        assert_well_formed(&program);
        for kind in [DeviceKind::Block, DeviceKind::Char] {
            for major in [0, 1, 2, 5, 136, 7] {
                for minor in [0, 1, 2, 3, 9] {
                    for access in 1..=ALL_ACCESS {
                        let expected = allows(&rules, kind, major, minor, access);
                        denied_somewhere += usize::from(!expected);
                        assert_eq!(
                            run(&program, kind, major, minor, access),
                            expected,
                            "{rules:?} {kind:?} {major}:{minor} access {access}"
                        );
                    }
                }
            }
        }
    }
    // Both verdicts were exercised.
    assert!(denied_somewhere > 1000, "{denied_somewhere}");
}
