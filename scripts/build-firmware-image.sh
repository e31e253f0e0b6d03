#!/usr/bin/env bash
# Builds the two firmware images of the node and prints their section sizes:
# - firmware/image: STM32F411 "Black Pill" (mrv-node-f411);
# - firmware/image-mps2: the same node for QEMU's mps2-an386 Cortex-M4
#   (mrv-node-mps2), which tests/tests/qemu_node.rs boots.
# Both go to ${CARGO_TARGET_DIR:-<repo>/target}/thumbv7em-none-eabihf/release;
# cargo's incremental build makes a re-run with unchanged sources a no-op.
#
# Adds the Rust target with rustup if it is missing. If the target truly
# cannot be installed (no route to the toolchain server), says so loudly and
# exits 0 unless STRICT=1, so that the host test suite still runs (as the
# firmware issue asks). A failing image build is always an error.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET=thumbv7em-none-eabihf
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "adding Rust target $TARGET"
    if ! rustup target add "$TARGET"; then
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
        echo "!!! cannot install the $TARGET target: firmware image NOT built  !!!" >&2
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
        if [[ "${STRICT:-0}" == 1 ]]; then exit 1; fi
        exit 0
    fi
fi

sizes() {
    local elf=$1
    if command -v llvm-size >/dev/null; then
        llvm-size -A "$elf" | grep -E '^(section|\.vector_table|\.text|\.rodata|\.data|\.bss|\.uninit)'
        llvm-size "$elf"
    elif command -v size >/dev/null; then
        size -A "$elf" | grep -E '^(section|\.vector_table|\.text|\.rodata|\.data|\.bss)'
    else
        ls -l "$elf"
    fi
    echo "image: $elf"
}

for dir in image image-mps2; do
    (cd "$ROOT/firmware/$dir" && { cargo build --release --locked 2>&1 || cargo build --release; })
done
sizes "$CARGO_TARGET_DIR/$TARGET/release/mrv-node-f411"
sizes "$CARGO_TARGET_DIR/$TARGET/release/mrv-node-mps2"
