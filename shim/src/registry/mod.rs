//! `berth pull` and `berth push`: talking to OCI / Docker registries with oci-client.
//!
//! Every blob is verified while it is written into the store (see
//! [`crate::store::BlobWriter`]); layers are unpacked once all blobs are in, and the
//! image is recorded under the store lock at the very end.

mod client;
mod error;
mod platform;
mod progress;
mod pull;
mod push;

pub use client::AUTH_ENV;
pub use error::RegistryError;
pub use pull::{pull, PullOptions};
pub use push::{push, PushOptions};
