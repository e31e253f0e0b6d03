#!/usr/bin/env bash
# Builds the Debian package of the MRV gateway from a built binary, with
# dpkg-deb only (no debhelper, no cargo-deb: nothing to compile, nothing
# downloaded). The package layout and maintainer scripts are in
# packaging/debian/ (see packaging/debian/README.md).
#
#   scripts/build-deb.sh [--binary PATH] [--version VERSION] [--out DIR] [--fast]
#
# --fast compresses with gzip -1 instead of xz (tests: a debug binary is big).
#
# The production package is built from the release binary without the demo:
#   cargo build --release -p mrv-gateway --no-default-features
#   scripts/build-deb.sh --binary target/release/mrv-gateway
# (the default --binary; CARGO_TARGET_DIR is honoured). Tests build it from
# the debug binary they already have (tests/tests/debian_package.rs), so CI
# compiles no release build for it.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
binary="$target/release/mrv-gateway"
version=""
out="$target/debian"
compress=(-Zxz)
while [ $# -gt 0 ]; do
    case "$1" in
        --fast) compress=(-Zgzip -z1); shift ;;
        --binary) binary="$2"; shift 2 ;;
        --version) version="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
[ -x "$binary" ] || { echo "no executable at $binary: build it first (see the header of $0)" >&2; exit 1; }
if [ -z "$version" ]; then
    version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
fi
arch="$(dpkg --print-architecture)"
pkg=mrv-gateway
src=packaging/debian

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/usr/lib/sysusers.d" "$root/etc/mrv-gateway" \
    "$root/usr/share/doc/$pkg/examples/profiles" "$root/usr/share/lintian/overrides"
install -d -m 0700 "$root/var/lib/mrv-gateway"

# The binary, stripped (debug symbols stay in the build tree).
install -m 0755 "$binary" "$root/usr/bin/mrv-gateway"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/mrv-gateway"

# The unit as shipped in config/, with the packaged binary path.
sed 's#/usr/local/bin/mrv-gateway#/usr/bin/mrv-gateway#g' config/mrv-gateway.service \
    > "$root/lib/systemd/system/mrv-gateway.service"
chmod 0644 "$root/lib/systemd/system/mrv-gateway.service"
install -m 0644 "$src/sysusers.conf" "$root/usr/lib/sysusers.d/mrv-gateway.conf"

# The config: the documented example, a conffile (the admin's edits survive
# upgrades); its data_dir is /var/lib/mrv-gateway.
install -m 0640 config/gateway.example.toml "$root/etc/mrv-gateway/gateway.toml"
install -m 0644 config/gateway.example.toml "$root/usr/share/doc/$pkg/examples/gateway.example.toml"
install -m 0644 config/profiles/*.toml "$root/usr/share/doc/$pkg/examples/profiles/"
install -m 0644 README.md "$root/usr/share/doc/$pkg/README.md"
install -m 0644 "$src/copyright" "$root/usr/share/doc/$pkg/copyright"
sed "s/@VERSION@/$version/" "$src/changelog" | gzip -9n > "$root/usr/share/doc/$pkg/changelog.gz"
chmod 0644 "$root/usr/share/doc/$pkg/changelog.gz"
install -m 0644 "$src/lintian-overrides" "$root/usr/share/lintian/overrides/$pkg"

for s in postinst prerm postrm; do
    install -m 0755 "$src/$s" "$root/DEBIAN/$s"
done
install -m 0644 "$src/conffiles" "$root/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    "$src/control" > "$root/DEBIAN/control"

mkdir -p "$out"
deb="$out/${pkg}_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
