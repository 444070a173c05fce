//! berth's host side: the CLI's commands, the image store and the container runtimes.

pub mod archive;
pub mod cli;
pub mod commands;
pub mod container;
pub mod containerd;
pub mod context;
pub mod monitor;
pub mod oci;
pub mod options;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod store;

/// An error and its causes on one line: `outer: cause: root cause`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
