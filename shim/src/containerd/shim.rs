//! The shim's life cycle: `start` (spawn the daemon and hand containerd its
//! socket), `delete` (clean up after a dead shim), serving and shutdown.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};

use super::events::Publisher;
use super::process::now;
use super::service::{Inner, Service};
use super::{reaper, rootfs, runtime, RUNTIME_NAME};

/// `start` for containerd 1.6: spawn the serving shim and print its address
/// as plain text (the crate answers with the JSON of containerd 1.7 and later,
/// which 1.6 cannot read; 1.7 and later read the plain address too).
pub fn start_legacy(flags: &Flags) -> i32 {
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    let grouping = opts.id.clone();
    match containerd_shim::spawn(opts, &grouping, Vec::new()).and_then(|(_, address)| {
        write_address(&address)?;
        Ok(address)
    }) {
        Ok(address) => {
            print!("{address}");
            0
        }
        Err(e) => {
            eprintln!("{RUNTIME_NAME}: {e}");
            1
        }
    }
}

/// The shim.
pub struct BerthShim {
    namespace: String,
    id: String,
    bundle: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for BerthShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        BerthShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle: args.bundle.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = opts.id.clone();
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let _ = runtime::run(&self.namespace, &["delete", "--force", &self.id]);
        let bundle = if self.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&self.bundle)
        };
        rootfs::unmount(&bundle);
        Ok(DeleteResponse {
            exit_status: 128 + 9,
            exited_at: Some(now()).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        let inner = Arc::new(Inner {
            namespace: self.namespace.clone(),
            id: self.id.clone(),
            publisher: Publisher::new(publisher, &self.namespace),
            exits: Mutex::default(),
            container: Mutex::new(None),
            exit: self.exit.clone(),
        });
        if let Err(e) = reaper::start(inner.clone()) {
            log::error!("{}", crate::error_chain(&e));
        }
        Service { inner }
    }
}

/// Serve the Task service under both containerd's task v2 name (containerd 1.6
/// and 1.7) and v3 (2.x): the crate registers only v3, whose messages are the
/// same on the wire. Also the subreaper set-up and the reaping the crate's own
/// serving loop would do.
pub fn serve(flags: &Flags) -> i32 {
    match serve_in(flags) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{RUNTIME_NAME}: {}", crate::error_chain(&e));
            1
        }
    }
}

/// The serving shim could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot become a subreaper")]
    Subreaper(#[source] std::io::Error),
    #[error("cannot connect to {address}")]
    Publisher {
        address: String,
        #[source]
        source: containerd_shim::Error,
    },
    #[error("cannot create {}", path.display())]
    SocketDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {path}")]
    Listen {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the ttrpc server")]
    Server(#[source] containerd_shim::protos::ttrpc::Error),
}

fn serve_in(flags: &Flags) -> Result<(), ServeError> {
    use std::os::fd::IntoRawFd;
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(ServeError::Subreaper(std::io::Error::last_os_error()));
    }
    std::thread::spawn(reap_loop);
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    let publisher =
        RemotePublisher::new(&ttrpc_address).map_err(|source| ServeError::Publisher {
            address: ttrpc_address.clone(),
            source,
        })?;
    let mut config = Config::default();
    let mut shim = <BerthShim as containerd_shim::Shim>::new(RUNTIME_NAME, flags, &mut config);
    let service = containerd_shim::Shim::create_task_service(&shim, publisher);
    let task: Arc<dyn containerd_shim::Task + Send + Sync> = Arc::new(service);
    let v3 = containerd_shim::protos::shim_sync::create_task(task.clone());
    let v2 = containerd_shim::protos::shim_sync::create_task(task)
        .into_iter()
        .map(|(path, handler)| (path.replace(".task.v3.", ".task.v2."), handler))
        .collect();
    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket)
        .to_string();
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::SocketDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = match std::os::unix::net::UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(source) => return Err(ServeError::Listen { path, source }),
    };
    let mut server = containerd_shim::protos::ttrpc::Server::new()
        .add_listener(listener.into_raw_fd())
        .map_err(ServeError::Server)?
        .register_service(v3)
        .register_service(v2);
    server.start().map_err(ServeError::Server)?;
    // The start command copies our stdout until it closes: point it at stderr.
    // SAFETY: dup2 on the process's own standard descriptors.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    containerd_shim::Shim::wait(&mut shim);
    server.shutdown();
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Reap every child and report its exit to the crate's exit monitor.
fn reap_loop() {
    use containerd_shim::monitor::monitor_notify_by_pid;
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) => {
                let _ = monitor_notify_by_pid(pid.as_raw(), code);
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                let _ = monitor_notify_by_pid(pid.as_raw(), 128 + signal as i32);
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}
