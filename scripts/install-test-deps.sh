#!/usr/bin/env bash
# Installs the external programs the test suite needs. Idempotent: each step
# is skipped when what it installs is already there.
set -euo pipefail

# Reports (tests/tests/report_python.rs): an independent verifier in Python,
# using a JOSE library and `cryptography`.
if ! python3 -c 'import joserfc, cryptography' 2>/dev/null; then
    python3 -m pip install --quiet 'joserfc>=1.0' 'cryptography>=41'
fi

# Modbus (tests/tests/modbus_*.rs): mbpoll reads our simulated meters; a
# pymodbus server (TCP and RTU) is a peer we did not write; socat makes the
# pseudo-terminal pair the RTU test runs over.
if ! command -v mbpoll >/dev/null 2>&1 || ! command -v socat >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq mbpoll socat
fi
if ! python3 -c 'import pymodbus, serial; assert pymodbus.__version__.startswith("3.8")' 2>/dev/null; then
    python3 -m pip install --quiet 'pymodbus==3.8.*' 'pyserial>=3.5'
fi
