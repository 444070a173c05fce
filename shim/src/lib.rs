//! berth's host side: the CLI's commands, the image store and the container runtimes.

pub mod cli;
pub mod commands;
pub mod container;
pub mod context;
pub mod reference;
pub mod registry;
pub mod archive;
pub mod runtime;
pub mod store;
