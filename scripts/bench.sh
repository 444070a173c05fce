#!/usr/bin/env bash
# berth's benchmarks (not part of the test suite):
#
#   ./scripts/bench.sh startup [N]    berth run --rm vs runc run, N runs each
#   ./scripts/bench.sh runtimes [N]   run --rm in ns, vm/qemu and vm/builtin; memory per VM
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    startup)
        shift
        exec tests/bench/startup.sh "$@"
        ;;
    runtimes)
        shift
        exec tests/bench/runtimes.sh "$@"
        ;;
    *)
        echo "usage: $0 startup|runtimes [N]" >&2
        exit 2
        ;;
esac
