#!/bin/sh
# Builds and runs the CPU forward benchmark (bench/cpu_forward.c) against
# the library of build folder $BUILD (default: build), after one line saying
# when and where it ran. Arguments go to the benchmark, e.g.
#   BUILD=build-ops bench/cpu_forward.sh --decode 32 --batch 8
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
make -s BUILD="$BUILD" "$BUILD/bench/cpu_forward"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(lscpu | sed -n 's/^Model name: *//p'); $(nproc) cores;" \
     "load average $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
exec "$BUILD/bench/cpu_forward" "$@"
