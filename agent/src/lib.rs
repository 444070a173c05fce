//! Container set-up from an OCI runtime spec.
