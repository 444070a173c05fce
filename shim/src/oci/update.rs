//! `update`: change the limits of a container's cgroup, like `runc update` (in vm
//! mode, of the container's cgroup in the guest).
//!
//! The new limits come from `--resources FILE`, a JSON `linux.resources` object
//! (`-` reads it from stdin, as containerd's shims pass it), and from the flags,
//! which override single fields of that object. Fields left out keep their
//! current values, and so do zero or empty values (`"shares": 0`, `"cpus": ""`),
//! which runc reads as unset and Docker sends for every field it knows. Device
//! rules in the JSON are ignored, as runc ignores them.
//! The applied limits are merged into the saved `config.json`, so a later update
//! of only the CFS quota or only the period keeps the other.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};
use serde_json::Value;

use super::cli::{Global, UpdateArgs};
use super::container::{self, Record, RecordError, Status};
use super::CommandError;

/// `--resources` could not be read or is not a `linux.resources` object.
#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    #[error("cannot read {}", source_name(path))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a valid linux.resources JSON object", source_name(path))]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A flag's value was refused while parsing the command line.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error(
        "{0:?} is not a size: expected bytes with an optional unit k, m, g, t or p \
         (like 512m), or -1 for unlimited"
    )]
    Size(String),
    #[error("{0:?} is more bytes than a limit can hold")]
    TooLarge(String),
    #[error("Intel RDT (resctrl) is not supported by berth-runtime")]
    Resctrl,
}

/// `berth-runtime update`.
pub fn update(global: &Global, args: &UpdateArgs) -> Result<(), CommandError> {
    let record = Record::load(global, &args.id)?;
    if record.status(global) == Status::Stopped {
        return Err(CommandError::NotRunning(args.id.clone()));
    }
    let mut resources = match &args.resources {
        Some(path) => read_resources(path)?,
        None => LinuxResources::default(),
    };
    resources.set_devices(None);
    apply_flags(args, &mut resources);
    drop_unset(&mut resources);
    let mut config = load_config(global, &record)?;
    fill_cpu_bandwidth(&mut resources, &config);
    if record.vm.is_some() {
        super::vm::update(global, &record, resources.clone())?;
    } else {
        record
            .cgroup()?
            .create(Some(&resources))
            .map_err(CommandError::Apply)?;
    }
    Ok(save_config(global, &record, &mut config, &resources)?)
}

/// Where `--resources` reads from, for messages.
fn source_name(path: &Path) -> String {
    if path == Path::new("-") {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Read and parse `--resources` (`-`: stdin).
fn read_resources(path: &Path) -> Result<LinuxResources, ResourcesError> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|source| ResourcesError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_resources(&text).map_err(|source| ResourcesError::Json {
        path: path.to_owned(),
        source,
    })
}

fn parse_resources(text: &str) -> Result<LinuxResources, serde_json::Error> {
    serde_json::from_str(text)
}

fn cpu(resources: &mut LinuxResources) -> &mut LinuxCpu {
    resources.cpu_mut().get_or_insert_with(LinuxCpu::default)
}

fn memory(resources: &mut LinuxResources) -> &mut LinuxMemory {
    resources
        .memory_mut()
        .get_or_insert_with(LinuxMemory::default)
}

/// Set the fields the flags name over `resources` (from `--resources` or empty).
/// `--kernel-memory` is accepted and ignored, like the kernel does since 5.16.
fn apply_flags(args: &UpdateArgs, resources: &mut LinuxResources) {
    if let Some(weight) = args.blkio_weight {
        let io = resources
            .block_io_mut()
            .get_or_insert_with(LinuxBlockIo::default);
        io.set_weight(Some(weight));
    }
    if let Some(period) = args.cpu_period {
        cpu(resources).set_period(Some(period));
    }
    if let Some(quota) = args.cpu_quota {
        cpu(resources).set_quota(Some(quota));
    }
    if let Some(period) = args.cpu_rt_period {
        cpu(resources).set_realtime_period(Some(period));
    }
    if let Some(runtime) = args.cpu_rt_runtime {
        cpu(resources).set_realtime_runtime(Some(runtime));
    }
    if let Some(shares) = args.cpu_share {
        cpu(resources).set_shares(Some(shares));
    }
    if let Some(cpus) = &args.cpuset_cpus {
        cpu(resources).set_cpus(Some(cpus.clone()));
    }
    if let Some(mems) = &args.cpuset_mems {
        cpu(resources).set_mems(Some(mems.clone()));
    }
    if let Some(tcp) = args.kernel_memory_tcp {
        memory(resources).set_kernel_tcp(Some(tcp));
    }
    if let Some(limit) = args.memory {
        memory(resources).set_limit(Some(limit));
    }
    if let Some(reservation) = args.memory_reservation {
        memory(resources).set_reservation(Some(reservation));
    }
    if let Some(swap) = args.memory_swap {
        memory(resources).set_swap(Some(swap));
    }
    if let Some(limit) = args.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(limit);
        resources.set_pids(Some(pids));
    }
}

/// A zero (or empty) value, kept only when not zero.
fn set<T: Default + PartialEq>(value: Option<T>) -> Option<T> {
    value.filter(|v| *v != T::default())
}

/// runc's `update` reads a zero or empty value as "leave as is", and Docker
/// sends every field it knows, zero when the user did not set it (cpu shares,
/// period, quota, cpuset, memory reservation...): drop those.
fn drop_unset(resources: &mut LinuxResources) {
    if let Some(cpu) = resources.cpu_mut() {
        cpu.set_shares(set(cpu.shares()));
        cpu.set_period(set(cpu.period()));
        cpu.set_quota(set(cpu.quota()));
        cpu.set_realtime_period(set(cpu.realtime_period()));
        cpu.set_realtime_runtime(set(cpu.realtime_runtime()));
        cpu.set_cpus(set(cpu.cpus().clone()));
        cpu.set_mems(set(cpu.mems().clone()));
    }
    if let Some(memory) = resources.memory_mut() {
        memory.set_limit(set(memory.limit()));
        memory.set_reservation(set(memory.reservation()));
        memory.set_swap(set(memory.swap()));
        memory.set_kernel(set(memory.kernel()));
        memory.set_kernel_tcp(set(memory.kernel_tcp()));
    }
    if let Some(io) = resources.block_io_mut() {
        io.set_weight(set(io.weight()));
        io.set_leaf_weight(set(io.leaf_weight()));
    }
    if resources.pids().is_some_and(|pids| pids.limit() == 0) {
        resources.set_pids(None);
    }
}

/// The CFS quota and period are written together on cgroup v2 (`cpu.max`):
/// when only one is given, take the other from the saved spec.
fn fill_cpu_bandwidth(resources: &mut LinuxResources, config: &Value) {
    let saved = &config["linux"]["resources"]["cpu"];
    let Some(cpu) = resources.cpu_mut() else {
        return;
    };
    match (cpu.quota(), cpu.period()) {
        (Some(_), None) => {
            cpu.set_period(saved["period"].as_u64());
        }
        (None, Some(_)) => {
            cpu.set_quota(saved["quota"].as_i64());
        }
        _ => {}
    }
}

fn config_path(global: &Global, record: &Record) -> PathBuf {
    container::dir(global, &record.id).join("config.json")
}

fn load_config(global: &Global, record: &Record) -> Result<Value, RecordError> {
    let path = config_path(global, record);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => return Err(RecordError::Read { path, source }),
    };
    serde_json::from_str(&text).map_err(|source| RecordError::Corrupt { path, source })
}

/// Merge the applied `resources` into the saved spec, replacing it atomically.
fn save_config(
    global: &Global,
    record: &Record,
    config: &mut Value,
    resources: &LinuxResources,
) -> Result<(), RecordError> {
    let encode = |source| RecordError::Encode {
        id: record.id.clone(),
        source,
    };
    let update = serde_json::to_value(resources).map_err(encode)?;
    merge(&mut config["linux"]["resources"], &update);
    let json = serde_json::to_vec_pretty(config).map_err(encode)?;
    let path = config_path(global, record);
    let tmp = path.with_extension("json.tmp");
    if let Err(source) = std::fs::write(&tmp, json) {
        return Err(RecordError::Write { path: tmp, source });
    }
    std::fs::rename(&tmp, &path).map_err(|source| RecordError::Write { path, source })
}

/// Deep-merge `update` into `target`: objects key by key, anything else replaced.
fn merge(target: &mut Value, update: &Value) {
    match (target, update) {
        (Value::Object(target), Value::Object(update)) => {
            for (key, value) in update {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (target, update) => *target = update.clone(),
    }
}

/// A size in bytes as runc's `update` takes it: a number with an optional
/// binary unit (`k`, `m`, `g`, `t`, `p`, optionally followed by `i` and/or `b`,
/// in any case, like `512m`, `1.5G`, `64MiB`), or `-1` for unlimited.
pub fn parse_size(text: &str) -> Result<i64, ValueError> {
    let bad = || ValueError::Size(text.to_owned());
    let trimmed = text.trim();
    if trimmed == "-1" {
        return Ok(-1);
    }
    let end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(end);
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let shift: u32 = match unit {
        "" => 0,
        "k" | "ki" => 10,
        "m" | "mi" => 20,
        "g" | "gi" => 30,
        "t" | "ti" => 40,
        "p" | "pi" => 50,
        _ => return Err(bad()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && (!digits(fraction) || fraction.len() > 9)) {
        return Err(bad());
    }
    let whole: u128 = whole.parse().map_err(|_| bad())?;
    let mut bytes = whole << shift;
    if !fraction.is_empty() {
        let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| bad())?);
        let fraction: u128 = fraction.parse().map_err(|_| bad())?;
        bytes += (fraction << shift) / scale;
    }
    i64::try_from(bytes).map_err(|_| ValueError::TooLarge(text.to_owned()))
}

/// The value parser of `--l3-cache-schema` and `--mem-bw-schema`: berth-runtime
/// has no Intel RDT support, so any value is refused.
pub fn refuse_resctrl(_: &str) -> Result<String, ValueError> {
    Err(ValueError::Resctrl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn sizes_take_plain_bytes_and_binary_units() {
        assert_eq!(parse_size("268435456").unwrap(), 268_435_456);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512b").unwrap(), 512);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64 m").unwrap(), 64 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("1t").unwrap(), 1 << 40);
    }

    #[test]
    fn sizes_refuse_what_is_not_a_size() {
        for text in [
            "", "m", "12x", "-2", "-5m", "1.2.3m", "1.", ".5m", "64mm", "64ibm", "i", "0x10",
        ] {
            assert!(
                matches!(parse_size(text), Err(ValueError::Size(_))),
                "{text:?}: {:?}",
                parse_size(text)
            );
        }
        assert!(matches!(
            parse_size("9000000p"),
            Err(ValueError::TooLarge(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999999"),
            Err(ValueError::Size(_))
        ));
    }

    fn args(argv: &[&str]) -> UpdateArgs {
        let mut full = vec!["berth-runtime", "update"];
        full.extend_from_slice(argv);
        match super::super::cli::Cli::try_parse_from(full)
            .unwrap()
            .command
        {
            Some(super::super::cli::Command::Update(args)) => args,
            other => panic!("not an update: {other:?}"),
        }
    }

    #[test]
    fn flags_override_fields_of_the_resources_json() {
        let mut resources = parse_resources(
            r#"{"memory": {"limit": 1048576, "reservation": 4096},
                "cpu": {"shares": 512, "quota": 20000, "cpus": "1"},
                "pids": {"limit": 10},
                "blockIO": {"weight": 300}}"#,
        )
        .unwrap();
        let args = args(&[
            "--memory",
            "64m",
            "--memory-swap=-1",
            "--cpu-share",
            "1024",
            "--cpuset-mems",
            "0",
            "--blkio-weight",
            "500",
            "--kernel-memory",
            "1g",
            "ID",
        ]);
        apply_flags(&args, &mut resources);
        let memory = resources.memory().unwrap();
        assert_eq!(memory.limit(), Some(64 << 20));
        assert_eq!(memory.swap(), Some(-1));
        assert_eq!(memory.reservation(), Some(4096), "kept from the JSON");
        assert_eq!(memory.kernel(), None, "--kernel-memory is ignored");
        let cpu = resources.cpu().as_ref().unwrap();
        assert_eq!(cpu.shares(), Some(1024));
        assert_eq!(cpu.quota(), Some(20000));
        assert_eq!(cpu.cpus().as_deref(), Some("1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        assert_eq!(resources.pids().unwrap().limit(), 10);
        assert_eq!(resources.block_io().as_ref().unwrap().weight(), Some(500));
    }

    #[test]
    fn flags_alone_set_only_what_they_name() {
        let mut resources = LinuxResources::default();
        apply_flags(&args(&["--pids-limit", "30", "ID"]), &mut resources);
        assert_eq!(resources.pids().unwrap().limit(), 30);
        assert!(resources.memory().is_none());
        assert!(resources.cpu().is_none());
        assert!(resources.block_io().is_none());
        let json = serde_json::to_value(&resources).unwrap();
        assert_eq!(json, serde_json::json!({"pids": {"limit": 30}}));
    }

    #[test]
    fn bad_values_and_resctrl_are_refused_on_the_command_line() {
        let parse = |argv: &[&str]| {
            let mut full = vec!["berth-runtime", "update"];
            full.extend_from_slice(argv);
            super::super::cli::Cli::try_parse_from(full)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(parse(&["--memory", "12x", "ID"]).contains("not a size"));
        assert!(parse(&["--l3-cache-schema", "L3:0=f", "ID"]).contains("resctrl"));
        assert!(parse(&["--mem-bw-schema", "MB:0=70", "ID"]).contains("resctrl"));
        assert!(parse(&["--cpu-share", "many", "ID"]).contains("--cpu-share"));
    }

    #[test]
    fn resources_json_with_a_wrong_type_is_refused() {
        assert!(parse_resources(r#"{"pids": {"limit": "many"}}"#).is_err());
        assert!(parse_resources("{").is_err());
        assert!(parse_resources("").is_err());
    }

    #[test]
    fn zero_values_docker_sends_are_left_alone() {
        // What dockerd 20.10 sends for `docker update --memory 96m --memory-swap 192m`.
        let mut resources = parse_resources(
            r#"{"memory": {"limit": 100663296, "reservation": 0, "swap": 201326592, "kernel": 0},
                "cpu": {"shares": 0, "quota": 0, "period": 0, "cpus": "", "mems": ""},
                "blockIO": {"weight": 0}, "pids": {"limit": 0}}"#,
        )
        .unwrap();
        drop_unset(&mut resources);
        assert_eq!(
            serde_json::to_value(&resources).unwrap(),
            serde_json::json!({"memory": {"limit": 100663296, "swap": 201326592},
                               "cpu": {}, "blockIO": {}})
        );
        // -1 (unlimited) is a value, not "unset".
        let mut resources = parse_resources(
            r#"{"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1}, "pids": {"limit": -1}}"#,
        )
        .unwrap();
        let before = resources.clone();
        drop_unset(&mut resources);
        assert_eq!(resources, before);
    }

    #[test]
    fn one_of_quota_and_period_takes_the_other_from_the_saved_spec() {
        let config = serde_json::json!({"linux": {"resources": {"cpu": {"quota": 50000, "period": 200000}}}});
        let mut resources = LinuxResources::default();
        cpu(&mut resources).set_quota(Some(10000));
        fill_cpu_bandwidth(&mut resources, &config);
        assert_eq!(resources.cpu().as_ref().unwrap().period(), Some(200000));
        let mut resources = LinuxResources::default();
        cpu(&mut resources).set_period(Some(100000));
        fill_cpu_bandwidth(&mut resources, &config);
        assert_eq!(resources.cpu().as_ref().unwrap().quota(), Some(50000));
    }

    #[test]
    fn merge_keeps_fields_the_update_leaves_out() {
        let mut config = serde_json::json!({"linux": {"resources": {
            "memory": {"limit": 1, "swap": 2}, "devices": [{"allow": false, "access": "rwm"}]}}});
        let update = serde_json::json!({"memory": {"limit": 5}, "pids": {"limit": 7}});
        merge(&mut config["linux"]["resources"], &update);
        assert_eq!(
            config,
            serde_json::json!({"linux": {"resources": {
                "memory": {"limit": 5, "swap": 2},
                "devices": [{"allow": false, "access": "rwm"}],
                "pids": {"limit": 7}}}})
        );
    }
}
