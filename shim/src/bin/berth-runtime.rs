//! `berth-runtime`: an OCI runtime with runc's command line.

fn main() {
    std::process::exit(berth::oci::main());
}
