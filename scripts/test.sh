#!/usr/bin/env bash
# The one command that runs every test, installing what the tests need
# (mosquitto, mbpoll, socat, pymodbus, joserfc, chromium, the firmware
# target, ...). Safe to run again: installs are skipped when present.
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-shot test run gains nothing from incremental compilation, and its
# cache is about 3 GB of a clean build's 7.5 GB (a CI run once ran out of
# disk while linking tests). A developer's own `cargo test` keeps it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
free_kib=$(df -Pk "${CARGO_TARGET_DIR:-target}" 2>/dev/null | awk 'NR==2 {print $4}' || true)
if [ -z "$free_kib" ]; then
    free_kib=$(df -Pk . | awk 'NR==2 {print $4}')
fi
echo "== free disk for the build: $((free_kib / 1024 / 1024)) GiB (a clean build needs about 5 GiB)"
if [ "$free_kib" -lt $((5 * 1024 * 1024)) ]; then
    echo "warning: less than 5 GiB free; the build may fail with 'No space left on device'" >&2
fi

echo "== installing test dependencies"
bash scripts/install-test-deps.sh

if [ -x scripts/build-firmware-image.sh ]; then
    echo "== firmware image for a real microcontroller target"
    bash scripts/build-firmware-image.sh
fi

echo "== cargo test (workspace, debug)"
cargo test --workspace --locked

echo "== power cuts on a FUSE file system (tests/tests/power_cut.rs)"
# Behind the mrv-e2e feature `power-cut`: the fuser crate ships a
# rust-toolchain file (1.85); RUSTUP_TOOLCHAIN keeps the toolchain in use.
RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-stable}" cargo test -p mrv-e2e --features power-cut --locked --lib --test power_cut
