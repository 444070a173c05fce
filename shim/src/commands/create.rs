//! `berth create`: turn options and the image's defaults into a container record on disk.

use crate::cli::container::CreateArgs;
use crate::container::{ContainerRecord, ContainerStore, HostConfig, ProcessConfig};
use crate::context::Context;
use crate::options::{self, OptionError};
use crate::reference::Reference;
use crate::registry::{self, PullOptions};
use crate::runtime::{self, RuntimeError};
use crate::store::{Image, ImageStore, StoreError};

use super::CommandError;

/// Used when neither the image nor the user set PATH, as Docker does.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn create(ctx: &Context, args: &CreateArgs) -> Result<i32, CommandError> {
    let record = create_container(ctx, args)?;
    println!("{}", record.id);
    Ok(0)
}

/// The image to create a container from, pulled first when `--pull` says so (Docker's
/// default: only when it is missing).
fn find_or_pull(images: &ImageStore, name: &str, policy: &str) -> Result<Image, CommandError> {
    let found = match images.resolve(name) {
        Ok(image) if policy != "always" => return Ok(image),
        Ok(image) => Some(image),
        Err(StoreError::ImageNotFound(_)) if policy != "never" => None,
        Err(e) => return Err(e.into()),
    };
    // An image id (or id prefix) that is not here cannot be pulled: report it as missing.
    let Ok(reference) = Reference::parse(name) else {
        return Err(StoreError::ImageNotFound(name.to_string()).into());
    };
    if found.is_none() {
        eprintln!("Unable to find image '{}' locally", reference.short());
    }
    let options = PullOptions {
        insecure: reference.is_local_registry(),
        platform: None,
        quiet: false,
        progress_on_stderr: true,
    };
    registry::pull(images, &reference, &options).map_err(|e| CommandError::Registry(Box::new(e)))
}

/// Validates everything, then writes the container; nothing is written when anything is wrong.
pub fn create_container(ctx: &Context, args: &CreateArgs) -> Result<ContainerRecord, CommandError> {
    let runtime_name = match &args.runtime {
        Some(name) => name.clone(),
        None => {
            let choice = runtime::default::choose(
                &ctx.root,
                &runtime::default::config_path(),
                runtime::vm::builtin_unavailable,
            )?;
            if let Some(notice) = choice.notice {
                eprintln!("{notice}");
            }
            tracing::debug!(runtime = %choice.runtime, "default runtime");
            choice.runtime
        }
    };
    runtime::for_name(&runtime_name)?;
    let vm = runtime_name == "vm";
    if vm && !args.volume.is_empty() {
        return Err(CommandError::Refused(
            "-v/--volume is not supported with --runtime=vm: the VM cannot see host folders \
             (berth has no virtio-fs or 9p share yet); use --runtime=ns, or put the files in \
             the image"
                .into(),
        ));
    }
    let storage_size = options::parse_storage_opts(&args.storage_opt)?;
    if !vm && storage_size > 0 {
        return Err(CommandError::Refused(
            "--storage-opt size= is only supported with --runtime=vm: with --runtime=ns the \
             writable layer is a folder on the host's filesystem, which has no size"
                .into(),
        ));
    }
    if !vm && (args.hypervisor.is_some() || args.accel.is_some()) {
        return Err(CommandError::Refused(
            "--hypervisor and --accel only apply to --runtime=vm".into(),
        ));
    }
    let images = ImageStore::open(&ctx.root)?;
    let image = find_or_pull(&images, &args.image, &args.pull)?;
    let config = image.config.config().clone().unwrap_or_default();

    let image_entrypoint = config.entrypoint().clone().unwrap_or_default();
    let image_cmd = config.cmd().clone().unwrap_or_default();
    let process_args = options::resolve_args(
        &image_entrypoint,
        &image_cmd,
        args.entrypoint.as_deref(),
        &args.command,
    )?;

    let mut env_layers = vec![config.env().clone().unwrap_or_default()];
    for path in &args.env_file {
        let text = std::fs::read_to_string(path).map_err(|source| CommandError::ReadFile {
            path: path.clone(),
            source,
        })?;
        env_layers.push(options::parse_env_file(&text));
    }
    env_layers.push(
        args.env
            .iter()
            .filter_map(|e| options::expand_env_entry(e))
            .collect(),
    );
    let mut env = options::merge_env(&env_layers)?;
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if args.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }

    let cwd = match (&args.workdir, config.working_dir()) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) if !dir.is_empty() => dir.clone(),
        _ => "/".to_string(),
    };
    options::check_workdir(&cwd)?;

    let memory = args
        .memory
        .as_deref()
        .map(options::parse_memory)
        .transpose()?
        .unwrap_or(0);
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let nano_cpus = args
        .cpus
        .map(|c| options::parse_cpus(c, host_cpus))
        .transpose()?
        .unwrap_or(0);
    let binds = args
        .volume
        .iter()
        .map(|v| options::parse_volume(v))
        .collect::<Result<Vec<_>, OptionError>>()?;
    for bind in &binds {
        // Docker creates a missing host folder for a bind mount.
        if !bind.source.exists() {
            std::fs::create_dir_all(&bind.source).map_err(|source| CommandError::ReadFile {
                path: bind.source.clone(),
                source,
            })?;
        }
    }

    let (hypervisor, accel) = if vm {
        runtime::vm::choose(&ctx.root, args.hypervisor.as_deref(), args.accel.as_deref())
            .map_err(RuntimeError::from)?
    } else {
        (String::new(), String::new())
    };

    let store = ContainerStore::open(&ctx.root)?;
    let (id, name) = store.new_identity(args.name.as_deref())?;
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    env.push(format!("HOSTNAME={hostname}"));
    let record = ContainerRecord {
        name,
        created: chrono::Utc::now(),
        image_id: image.id.clone(),
        image_name: args.image.clone(),
        hostname,
        process: ProcessConfig {
            args: process_args,
            env,
            cwd,
            user: args
                .user
                .clone()
                .or_else(|| config.user().clone())
                .unwrap_or_default(),
            tty: args.tty,
            interactive: args.interactive,
        },
        host: HostConfig {
            runtime: runtime_name,
            memory,
            nano_cpus,
            pids_limit: args.pids_limit.filter(|l| *l > 0),
            read_only: args.read_only,
            binds,
            auto_remove: args.rm,
            storage_size,
            hypervisor,
            accel,
        },
        id,
    };
    store.create(&record)?;
    Ok(record)
}
