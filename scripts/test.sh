#!/usr/bin/env bash
# berth's one test command:
#
#   ./scripts/test.sh [extra cargo test arguments]
#
# Formatting, lints, then every test: unit tests of agent/ and shim/ and the
# end-to-end tests in tests/ (package berth-e2e), which drive the real berth
# binary and need root (they print "skipped: <reason>" otherwise).
#
# A package cannot depend on another package's binary, so `cargo test` alone
# would not build target/debug/berth: this script builds the workspace first.
# Run ./scripts/setup.sh once before, on a fresh machine.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace"
cargo build --workspace

step "cargo test --workspace $*"
cargo test --workspace "$@"
