//! `containerd-shim-berth-v2`: containerd's runtime v2 shim for berth
//! (`--runtime io.containerd.berth.v2`), driving `berth-runtime`.

fn main() {
    berth::containerd::main();
}
