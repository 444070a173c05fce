//! `berth inspect`: JSON for containers (Docker's shape), falling back to images.

use serde_json::{json, Value};

use crate::cli::container::InspectArgs;
use crate::container::{ContainerError, ContainerRecord, ContainerState, ContainerStore, Status};
use crate::context::Context;
use crate::store::ImageStore;

use super::CommandError;

pub fn inspect(ctx: &Context, args: &InspectArgs) -> Result<i32, CommandError> {
    let store = ContainerStore::open(&ctx.root)?;
    let mut values = Vec::new();
    let mut status = 0;
    for name in &args.names {
        match lookup(ctx, &store, name, args.kind.as_deref()) {
            Ok(value) => values.push(value),
            Err(e) => {
                eprintln!("berth: {}", crate::error_chain(&e));
                status = 1;
            }
        }
    }
    let text = serde_json::to_string_pretty(&Value::Array(values))
        .map_err(|e| CommandError::Refused(e.to_string()))?;
    println!("{text}");
    Ok(status)
}

fn lookup(
    ctx: &Context,
    store: &ContainerStore,
    name: &str,
    kind: Option<&str>,
) -> Result<Value, CommandError> {
    if kind != Some("image") {
        match store.find(name) {
            Ok(record) => {
                let state = store.state(&record.id)?;
                return Ok(container_json(store, &record, &state));
            }
            Err(ContainerError::NotFound(_)) if kind.is_none() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let images = ImageStore::open(&ctx.root)?;
    let image = images.resolve(name).map_err(|e| match kind {
        None => CommandError::Refused(format!("no such container or image: {name}")),
        _ => e.into(),
    })?;
    Ok(super::image::image_json(&images, &image))
}

/// Docker's `docker inspect` fields for a container, as far as berth has them.
pub fn container_json(store: &ContainerStore, r: &ContainerRecord, s: &ContainerState) -> Value {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string())
    };
    let running = s.status == Status::Running;
    let mounts: Vec<Value> = r
        .host
        .binds
        .iter()
        .map(|b| {
            json!({
                "Type": "bind",
                "Source": b.source,
                "Destination": b.destination,
                "Mode": if b.read_only { "ro" } else { "" },
                "RW": !b.read_only,
                "Propagation": "rprivate",
            })
        })
        .collect();
    let binds: Vec<String> = r
        .host
        .binds
        .iter()
        .map(|b| {
            let mode = if b.read_only { ":ro" } else { "" };
            format!("{}:{}{mode}", b.source.display(), b.destination)
        })
        .collect();
    let dir = store.dir(&r.id);
    let vm = (r.host.runtime == "vm").then(|| {
        let info = crate::runtime::vm::VmInfo::load(&dir).filter(|_| running);
        json!({
            "Hypervisor": r.host.hypervisor,
            "Accel": r.host.accel,
            "Pid": info.as_ref().map_or(0, |i| i.vmm_pid),
            "VsockSocket": info.as_ref().map(|_| dir.join(crate::runtime::vm::VSOCK_SOCKET)),
            "SerialLog": dir.join(crate::runtime::vm::SERIAL_LOG),
            "MemoryMiB": info.as_ref().map(|i| i.memory_mib),
            "Vcpus": info.as_ref().map(|i| i.vcpus),
            "Disks": info.as_ref().map(|i| i.disks.clone()).unwrap_or_default(),
        })
    });
    json!({
        "Id": r.id,
        "Created": time(Some(r.created)),
        "Path": r.process.args.first(),
        "Args": r.process.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": s.status.as_str(),
            "Running": running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": s.oom_killed,
            "Dead": false,
            "Pid": if running { s.pid.unwrap_or(0) } else { 0 },
            "ExitCode": s.exit_code.unwrap_or(0),
            "Error": s.error.clone().unwrap_or_default(),
            "StartedAt": time(s.started_at),
            "FinishedAt": time(s.finished_at),
        },
        "Image": r.image_id,
        "LogPath": store.log_path(&r.id),
        "Name": format!("/{}", r.name),
        "Driver": "overlay",
        "HostConfig": {
            "Runtime": r.host.runtime,
            "Hypervisor": r.host.hypervisor,
            "Accel": r.host.accel,
            "Binds": binds,
            "AutoRemove": r.host.auto_remove,
            "Memory": r.host.memory,
            "NanoCpus": r.host.nano_cpus,
            "PidsLimit": r.host.pids_limit,
            "ReadonlyRootfs": r.host.read_only,
            "CgroupParent": "/berth",
        },
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "UpperDir": dir.join("upper"),
                "WorkDir": dir.join("work"),
                "MergedDir": dir.join("rootfs"),
            },
        },
        "Mounts": mounts,
        "VM": vm,
        "Config": {
            "Hostname": r.hostname,
            "User": r.process.user,
            "Tty": r.process.tty,
            "OpenStdin": r.process.interactive,
            "Env": r.process.env,
            "Cmd": r.process.args,
            "Image": r.image_name,
            "WorkingDir": r.process.cwd,
            "Entrypoint": Value::Null,
        },
    })
}
