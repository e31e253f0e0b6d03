#!/usr/bin/env bash
# Installs the external programs the test suite needs. Idempotent: each step
# is skipped when what it installs is already there.
set -euo pipefail

# apt_install PKG...: installs the Debian packages that are missing, running
# `apt-get update` at most once per run.
APT_UPDATED=0
apt_install() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# Ingest (tests/tests/ingest_mosquitto.rs, benches): a real mosquitto broker
# and its command-line clients.
apt_install mosquitto mosquitto-clients
# Embedded MQTT endpoint (tests/tests/endpoint_clients.rs): paho-mqtt, a
# standard client we did not write, in MQTT 3.1.1 and 5.
if ! python3 -c 'import paho.mqtt; assert int(paho.mqtt.__version__.split(".")[0]) >= 2' 2>/dev/null; then
    python3 -m pip install --quiet 'paho-mqtt>=2.0,<3'
fi

# Reports (tests/tests/report_python.rs): an independent verifier in Python,
# using a JOSE library and `cryptography`.
if ! python3 -c 'import joserfc, cryptography' 2>/dev/null; then
    python3 -m pip install --quiet 'joserfc>=1.0' 'cryptography>=41'
fi

# Modbus (tests/tests/modbus_*.rs): mbpoll reads our simulated meters; a
# pymodbus server (TCP and RTU) is a peer we did not write; socat makes the
# pseudo-terminal pair the RTU test runs over.
apt_install mbpoll socat
if ! python3 -c 'import pymodbus, serial; assert pymodbus.__version__.startswith("3.8")' 2>/dev/null; then
    python3 -m pip install --quiet 'pymodbus==3.8.*' 'pyserial>=3.5'
fi

# Diagnostics (tests/tests/diagnostics_browser.rs): the page in a real
# headless browser (Debian's chromium; no browser download).
apt_install chromium

# Receiver (receiver/tests/*, benches): a throwaway PostgreSQL server that
# the tests start themselves (receiver/src/throwaway_postgres.rs) from
# Debian's server binaries, as the unprivileged `postgres` user.
apt_install postgresql
# Crediting statement (receiver/tests/statement_pack.rs): openpyxl, a
# workbook reader we did not write, reads the XLSX back.
if ! python3 -c 'import openpyxl' 2>/dev/null; then
    python3 -m pip install --quiet 'openpyxl>=3.1'
fi

# Debian package (tests/tests/debian_package.rs): dpkg-deb builds it, lintian
# checks it, systemd-sysusers creates its user inside a throwaway root.
apt_install lintian systemd binutils

# Clock sync state (tests/tests/time_sync_chrony.rs): chronyd and chronyc;
# the test starts its own chronyd processes (-x: never touching the system
# clock; loopback only). The package's own service must not start here (it
# would discipline this machine's clock from the Debian pool), so a
# policy-rc.d denies service starts during the install when none exists.
if ! dpkg -s chrony >/dev/null 2>&1; then
    if [ -e /usr/sbin/policy-rc.d ]; then
        apt_install chrony
    else
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        apt_install chrony || { rm -f /usr/sbin/policy-rc.d; exit 1; }
        rm -f /usr/sbin/policy-rc.d
    fi
fi

# Firmware on an emulated Cortex-M4 (tests/tests/qemu_node.rs): Debian's
# QEMU (bookworm: 7.2) boots firmware/image-mps2 on its mps2-an386 machine.
apt_install qemu-system-arm

# Disk-full tests (tests/tests/disk_full.rs): mkfs.ext4 and a loop device
# (e2fsprogs, mount); power-cut tests (tests/tests/power_cut.rs): /dev/fuse
# and, where the direct mount is refused, fusermount3.
apt_install e2fsprogs mount fuse3

# Injected I/O errors (tests/tests/injected_io_errors.rs): libfiu's fiu-run
# and fiu-ctrl preload failing fsync/fdatasync/sync_file_range/pwrite.
apt_install fiu-utils
