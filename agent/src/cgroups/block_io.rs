//! `linux.resources.blockIO`: weights and throttles, on the v1 blkio controller
//! or the v2 io controller.
//!
//! Weights need a proportional I/O scheduler (CFQ's `blkio.weight`, BFQ's
//! `blkio.bfq.weight` or `io.bfq.weight`, or v2's `io.weight`); throttles need the
//! block throttling layer. A setting the kernel has no file for fails, naming the
//! missing file, but only when the spec asks for it. Zero weights mean "unset", as
//! in runc.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice};

use super::{append_line, write_file, CgroupError, Result};

fn nonzero(value: Option<u16>) -> Option<u16> {
    value.filter(|v| *v != 0)
}

fn list<T>(devices: &Option<Vec<T>>) -> &[T] {
    devices.as_deref().unwrap_or_default()
}

/// The throttles: setting, v1 file, v2 io.max key, devices.
fn throttles(
    io: &LinuxBlockIo,
) -> [(
    &'static str,
    &'static str,
    &'static str,
    &[LinuxThrottleDevice],
); 4] {
    [
        (
            "linux.resources.blockIO.throttleReadBpsDevice",
            "blkio.throttle.read_bps_device",
            "rbps",
            list(io.throttle_read_bps_device()),
        ),
        (
            "linux.resources.blockIO.throttleWriteBpsDevice",
            "blkio.throttle.write_bps_device",
            "wbps",
            list(io.throttle_write_bps_device()),
        ),
        (
            "linux.resources.blockIO.throttleReadIOPSDevice",
            "blkio.throttle.read_iops_device",
            "riops",
            list(io.throttle_read_iops_device()),
        ),
        (
            "linux.resources.blockIO.throttleWriteIOPSDevice",
            "blkio.throttle.write_iops_device",
            "wiops",
            list(io.throttle_write_iops_device()),
        ),
    ]
}

/// Whether the spec sets anything at all.
pub(super) fn requested(io: &LinuxBlockIo) -> bool {
    nonzero(io.weight()).is_some()
        || nonzero(io.leaf_weight()).is_some()
        || list(io.weight_device())
            .iter()
            .any(|d| nonzero(d.weight()).is_some() || nonzero(d.leaf_weight()).is_some())
        || throttles(io)
            .iter()
            .any(|(.., devices)| !devices.is_empty())
}

/// The first of `names` that exists in `dir`, or an error for `setting`.
fn find(dir: &Path, setting: &'static str, names: &[&str]) -> Result<PathBuf> {
    names
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.exists())
        .ok_or_else(|| CgroupError::Unsupported {
            setting,
            reason: format!(
                "this kernel provides no {} in {}",
                names.join(" or "),
                dir.display()
            ),
        })
}

/// Apply to the v1 blkio cgroup directory `dir` (absent when blkio is not mounted).
pub(super) fn apply_v1(dir: &Path, io: &LinuxBlockIo) -> Result<()> {
    if !requested(io) {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(CgroupError::Unsupported {
            setting: "linux.resources.blockIO",
            reason: format!("no blkio controller ({} is missing)", dir.display()),
        });
    }
    const WEIGHT: &[&str] = &["blkio.weight", "blkio.bfq.weight"];
    const WEIGHT_DEVICE: &[&str] = &["blkio.weight_device", "blkio.bfq.weight_device"];
    if let Some(weight) = nonzero(io.weight()) {
        let file = find(dir, "linux.resources.blockIO.weight", WEIGHT)?;
        write_file(&file, &weight.to_string())?;
    }
    if let Some(weight) = nonzero(io.leaf_weight()) {
        let file = find(
            dir,
            "linux.resources.blockIO.leafWeight",
            &["blkio.leaf_weight"],
        )?;
        write_file(&file, &weight.to_string())?;
    }
    for device in list(io.weight_device()) {
        let id = format!("{}:{}", device.major(), device.minor());
        if let Some(weight) = nonzero(device.weight()) {
            let setting = "linux.resources.blockIO.weightDevice";
            append_line(
                &find(dir, setting, WEIGHT_DEVICE)?,
                &format!("{id} {weight}"),
            )?;
        }
        if let Some(weight) = nonzero(device.leaf_weight()) {
            let setting = "linux.resources.blockIO.weightDevice[].leafWeight";
            let file = find(dir, setting, &["blkio.leaf_weight_device"])?;
            append_line(&file, &format!("{id} {weight}"))?;
        }
    }
    for (setting, file, _, devices) in throttles(io) {
        for device in devices {
            let file = find(dir, setting, &[file])?;
            let line = format!("{}:{} {}", device.major(), device.minor(), device.rate());
            append_line(&file, &line)?;
        }
    }
    Ok(())
}

/// A v1 weight (10 to 1000) on v2's `io.weight` scale (1 to 10000), as runc and
/// crun convert it.
pub(super) fn io_weight(blkio_weight: u16) -> u64 {
    let weight = u64::from(blkio_weight.clamp(10, 1000));
    1 + (weight - 10) * 9999 / 990
}

/// Apply to the v2 cgroup directory `dir`. BFQ's `io.bfq.weight` takes weights as
/// they are; otherwise `io.weight` takes them converted.
pub(super) fn apply_v2(dir: &Path, io: &LinuxBlockIo) -> Result<()> {
    if !requested(io) {
        return Ok(());
    }
    let leaf = nonzero(io.leaf_weight()).is_some()
        || list(io.weight_device())
            .iter()
            .any(|d| nonzero(d.leaf_weight()).is_some());
    if leaf {
        return Err(CgroupError::Unsupported {
            setting: "linux.resources.blockIO.leafWeight",
            reason: "cgroup v2 has no leaf weights".to_owned(),
        });
    }
    let bfq = dir.join("io.bfq.weight");
    let weight_file = |setting| {
        let file = find(dir, setting, &["io.bfq.weight", "io.weight"])?;
        let convert = file != bfq;
        Ok::<_, CgroupError>((file, convert))
    };
    let scaled = |weight: u16, convert: bool| {
        if convert {
            io_weight(weight)
        } else {
            u64::from(weight)
        }
    };
    if let Some(weight) = nonzero(io.weight()) {
        let (file, convert) = weight_file("linux.resources.blockIO.weight")?;
        // The same file takes the per-device weights: one line per write.
        append_line(&file, &scaled(weight, convert).to_string())?;
    }
    for device in list(io.weight_device()) {
        if let Some(weight) = nonzero(device.weight()) {
            let (file, convert) = weight_file("linux.resources.blockIO.weightDevice")?;
            let line = format!(
                "{}:{} {}",
                device.major(),
                device.minor(),
                scaled(weight, convert)
            );
            append_line(&file, &line)?;
        }
    }
    for (setting, _, key, devices) in throttles(io) {
        for device in devices {
            let file = find(dir, setting, &["io.max"])?;
            let line = format!(
                "{}:{} {key}={}",
                device.major(),
                device.minor(),
                device.rate()
            );
            append_line(&file, &line)?;
        }
    }
    Ok(())
}
