#!/usr/bin/env bash
# berth's benchmarks (not part of the test suite):
#
#   ./scripts/bench.sh startup [N]    berth run --rm vs runc run, N runs each
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    startup)
        shift
        exec tests/bench/startup.sh "$@"
        ;;
    *)
        echo "usage: $0 startup [N]" >&2
        exit 2
        ;;
esac
