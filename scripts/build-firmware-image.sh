#!/usr/bin/env bash
# Builds the example firmware image (firmware/image, STM32F411 "Black Pill",
# thumbv7em-none-eabihf) and prints its section sizes.
#
# Adds the Rust target with rustup if it is missing. If the target truly
# cannot be installed (no route to the toolchain server), says so loudly and
# exits 0 unless STRICT=1, so that the host test suite still runs (as the
# firmware issue asks). A failing image build is always an error.
set -euo pipefail
cd "$(dirname "$0")/../firmware/image"
TARGET=thumbv7em-none-eabihf

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

cargo build --release --locked 2>&1 || cargo build --release
ELF=${CARGO_TARGET_DIR:-target}/$TARGET/release/mrv-node-f411
if command -v llvm-size >/dev/null; then
    llvm-size -A "$ELF" | grep -E '^(section|\.vector_table|\.text|\.rodata|\.data|\.bss|\.uninit)'
    llvm-size "$ELF"
elif command -v size >/dev/null; then
    size -A "$ELF" | grep -E '^(section|\.vector_table|\.text|\.rodata|\.data|\.bss)'
else
    ls -l "$ELF"
fi
echo "image: $ELF"
