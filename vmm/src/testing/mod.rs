//! Test support shared by unit tests and the harness-guest integration tests: a model of the
//! *driver* side of a split virtqueue, written straight into guest memory. Not part of the VMM.

pub mod virtq;
