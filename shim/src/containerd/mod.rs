//! `containerd-shim-berth-v2`: a containerd runtime v2 shim (`io.containerd.berth.v2`)
//! built like containerd's runc shim: every container operation runs the
//! `berth-runtime` binary (create/start/kill/delete/exec/ps/pause/resume/update/
//! events), the container's stdio is pumped between containerd's FIFOs and pipes
//! (or the pty master received on a console socket), and the shim, a child
//! subreaper, reaps the container's processes and publishes their exits.
//!
//! The ttrpc Task service, the `start`/`delete` actions and event forwarding come
//! from the `containerd-shim` crate (its synchronous flavour). One file per concern:
//! [`shim`] (the shim's life cycle), [`service`] (the Task service, dispatching to
//! [`create`], [`exec`], [`lifecycle`], [`query`]), [`process`] (a process and its
//! exit), [`reaper`] (exits to processes), [`io`] and [`console`] (stdio),
//! [`runtime`] (running berth-runtime), [`rootfs`] and [`events`].

pub mod console;
pub mod create;
pub mod events;
pub mod exec;
pub mod io;
pub mod lifecycle;
pub mod process;
pub mod query;
pub mod reaper;
pub mod rootfs;
pub mod runtime;
pub mod service;
pub mod shim;

/// containerd's runtime name for this shim.
pub const RUNTIME_NAME: &str = "io.containerd.berth.v2";

/// The binary's entry point.
pub fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Ok(flags) = containerd_shim::parse(args.get(1..).unwrap_or_default()) {
        if flags.action == "start" {
            std::process::exit(shim::start_legacy(&flags));
        }
        if flags.action.is_empty() && !flags.socket.is_empty() && !flags.namespace.is_empty() {
            std::process::exit(shim::serve(&flags));
        }
    }
    containerd_shim::run::<shim::BerthShim>(RUNTIME_NAME, None);
}

/// A ttrpc error with a gRPC code containerd maps to its errdefs.
pub fn rpc_error(
    code: containerd_shim::protos::ttrpc::Code,
    message: impl Into<String>,
) -> containerd_shim::protos::ttrpc::Error {
    containerd_shim::protos::ttrpc::Error::RpcStatus(containerd_shim::protos::ttrpc::get_status(
        code,
        message.into(),
    ))
}

/// An internal error, with its causes.
pub fn internal(error: impl std::error::Error) -> containerd_shim::protos::ttrpc::Error {
    rpc_error(
        containerd_shim::protos::ttrpc::Code::INTERNAL,
        crate::error_chain(&error),
    )
}

/// A not-found error.
pub fn not_found(what: impl std::fmt::Display) -> containerd_shim::protos::ttrpc::Error {
    rpc_error(
        containerd_shim::protos::ttrpc::Code::NOT_FOUND,
        format!("{what}: not found"),
    )
}
