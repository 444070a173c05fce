//! `linux.resources.devices` as one list of rules both cgroup versions enforce:
//! everything denied, then the spec's rules in order, then runc's always-allowed
//! nodes. For each kind of access a request asks for, the last rule that matches
//! the device and names that access decides (as runc's device emulator does).

use std::fmt;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::{CgroupError, Result};

/// Creating the node (`m`); the value the kernel's device BPF context uses.
pub(crate) const MKNOD: u8 = 1;
/// Opening for reading (`r`).
pub(crate) const READ: u8 = 2;
/// Opening for writing (`w`).
pub(crate) const WRITE: u8 = 4;
/// `rwm`.
pub(crate) const ALL_ACCESS: u8 = MKNOD | READ | WRITE;

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    /// `b`.
    Block,
    /// `c` (and `u`).
    Char,
}

/// One allow or deny rule; `None` fields match anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceRule {
    pub allow: bool,
    pub kind: Option<DeviceKind>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// [`MKNOD`], [`READ`] and [`WRITE`] bits.
    pub access: u8,
}

const fn allow(kind: DeviceKind, major: Option<u32>, minor: Option<u32>, access: u8) -> DeviceRule {
    DeviceRule {
        allow: true,
        kind: Some(kind),
        major,
        minor,
        access,
    }
}

/// Allowed after the spec's rules, as runc's spec conversion appends them:
/// mknod of any node, and the nodes every container gets (null, zero, full,
/// random, urandom, tty, the pty multiplexer and ptys).
pub(crate) const ALWAYS_ALLOWED: &[DeviceRule] = &[
    allow(DeviceKind::Char, None, None, MKNOD),
    allow(DeviceKind::Block, None, None, MKNOD),
    allow(DeviceKind::Char, Some(1), Some(3), ALL_ACCESS),
    allow(DeviceKind::Char, Some(1), Some(5), ALL_ACCESS),
    allow(DeviceKind::Char, Some(1), Some(7), ALL_ACCESS),
    allow(DeviceKind::Char, Some(1), Some(8), ALL_ACCESS),
    allow(DeviceKind::Char, Some(1), Some(9), ALL_ACCESS),
    allow(DeviceKind::Char, Some(5), Some(0), ALL_ACCESS),
    allow(DeviceKind::Char, Some(5), Some(2), ALL_ACCESS),
    allow(DeviceKind::Char, Some(136), None, ALL_ACCESS),
];

impl DeviceRule {
    /// The rule a spec entry stands for; `None` for FIFO rules, which no cgroup controls.
    pub(crate) fn from_spec(rule: &LinuxDeviceCgroup) -> Result<Option<DeviceRule>> {
        let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DeviceKind::Block),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DeviceKind::Char),
            LinuxDeviceType::P => return Ok(None),
        };
        let invalid = |reason: String| CgroupError::InvalidDeviceRule {
            rule: rule.to_string(),
            reason,
        };
        // Negative numbers are how specs spell "any"; the kernel's numbers fit in 31 bits.
        let number = |n: Option<i64>| -> Result<Option<u32>> {
            match n.filter(|n| *n >= 0) {
                None => Ok(None),
                Some(n) => u32::try_from(n)
                    .ok()
                    .filter(|n| i32::try_from(*n).is_ok())
                    .map(Some)
                    .ok_or_else(|| invalid(format!("device number {n} is out of range"))),
            }
        };
        let mut access = 0;
        for letter in rule.access().as_deref().unwrap_or_default().chars() {
            access |= match letter {
                'r' => READ,
                'w' => WRITE,
                'm' => MKNOD,
                other => return Err(invalid(format!("unknown access {other:?}"))),
            };
        }
        Ok(Some(DeviceRule {
            allow: rule.allow(),
            kind,
            major: number(rule.major())?,
            minor: number(rule.minor())?,
            access: if access == 0 { ALL_ACCESS } else { access },
        }))
    }

    /// Whether the rule is about this device (its access aside).
    pub(crate) fn matches(&self, kind: DeviceKind, major: u32, minor: u32) -> bool {
        self.kind.is_none_or(|k| k == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }
}

/// The v1 devices controller's form, e.g. `c 1:3 rwm` or `a *:* m`.
impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            None => 'a',
            Some(DeviceKind::Block) => 'b',
            Some(DeviceKind::Char) => 'c',
        };
        let number = |n: Option<u32>| n.map_or("*".to_owned(), |n| n.to_string());
        let access: String = [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')]
            .iter()
            .filter(|(bit, _)| self.access & bit != 0)
            .map(|(_, letter)| letter)
            .collect();
        write!(
            f,
            "{kind} {}:{} {access}",
            number(self.major),
            number(self.minor)
        )
    }
}

/// The spec's rules (FIFO rules dropped) followed by [`ALWAYS_ALLOWED`]; an
/// implicit deny-all comes before them all.
pub(crate) fn effective_rules(spec: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
    let mut rules = Vec::with_capacity(spec.len() + ALWAYS_ALLOWED.len());
    for rule in spec {
        match DeviceRule::from_spec(rule)? {
            Some(rule) => rules.push(rule),
            None => tracing::debug!("device rule {rule} has no cgroup form: skipped"),
        }
    }
    rules.extend_from_slice(ALWAYS_ALLOWED);
    Ok(rules)
}

/// Whether `rules` let a process have every kind of access in `access` to the
/// device: for each one, the last rule matching the device and naming that access
/// must allow it (with no such rule it is denied).
pub(crate) fn allows(
    rules: &[DeviceRule],
    kind: DeviceKind,
    major: u32,
    minor: u32,
    access: u8,
) -> bool {
    [MKNOD, READ, WRITE]
        .into_iter()
        .filter(|bit| access & bit != 0)
        .all(|bit| {
            rules
                .iter()
                .rev()
                .find(|r| r.access & bit != 0 && r.matches(kind, major, minor))
                .is_some_and(|r| r.allow)
        })
}

/// Whether some access to some device is denied. Rules only compare numbers for
/// equality, so trying every number they name plus one they do not covers all
/// devices.
pub(crate) fn denies_anything(rules: &[DeviceRule]) -> bool {
    let candidates = |pick: fn(&DeviceRule) -> Option<u32>| {
        let mut numbers: Vec<u32> = rules.iter().filter_map(pick).collect();
        let unnamed = (0..).find(|n| !numbers.contains(n)).unwrap_or(u32::MAX);
        numbers.push(unnamed);
        numbers
    };
    let majors = candidates(|r| r.major);
    let minors = candidates(|r| r.minor);
    [DeviceKind::Block, DeviceKind::Char]
        .into_iter()
        .any(|kind| {
            majors.iter().any(|major| {
                minors.iter().any(|minor| {
                    [MKNOD, READ, WRITE]
                        .into_iter()
                        .any(|bit| !allows(rules, kind, *major, *minor, bit))
                })
            })
        })
}
