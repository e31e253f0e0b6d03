#!/usr/bin/env bash
# The one command that runs every test, installing what the tests need
# (mosquitto, mbpoll, socat, pymodbus, joserfc, chromium, the firmware
# target, ...). Safe to run again: installs are skipped when present.
set -euo pipefail
cd "$(dirname "$0")/.."

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
