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
