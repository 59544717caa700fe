# Shared by scripts/test and scripts/demo: install what Lifeboat needs, idempotently.
# Source it; it defines functions only.

# Run as root, or through sudo when there is one.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the Debian packages given, running apt-get only for those missing. Two passes:
# installing Debian's qemu-system-x86 removes a newer (backported) qemu-utils, which the
# second pass puts back at Debian's version.
need_packages() {
  local pass missing p
  for pass in 1 2; do
    missing=()
    for p in "$@"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    [ "$pass" = 1 ] && as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  done
}

# The Rust toolchain pieces: the musl target, rustfmt and clippy.
need_rust() {
  if ! command -v cargo >/dev/null || ! command -v rustup >/dev/null; then
    echo "cargo and rustup are needed: see https://rustup.rs (then run this again)" >&2
    exit 1
  fi
  rustup target list --installed | grep -qx x86_64-unknown-linux-musl ||
    rustup target add x86_64-unknown-linux-musl
  for c in rustfmt clippy; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
  done
}

# Build the binary (release by default, or the profile given) and print its path as
# cargo reports it, so that CARGO_TARGET_DIR, a target-dir in a cargo config and the musl
# default target are all honoured: the scripts never guess where target/ is.
build_lifeboat() {
  local out
  out=$(cargo build --profile "${1:-release}" --quiet --bin lifeboat \
    --message-format=json-render-diagnostics) || return 1
  printf '%s\n' "$out" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "lifeboat" and m.get("executable"):
        print(m["executable"])
' | tail -n 1 | grep . || { echo "cargo built no lifeboat executable" >&2; return 1; }
}

build_release() { build_lifeboat release; }

# For scripts/fuzz: the nightly toolchain and cargo-fuzz, built once into .cache/tools.
need_fuzz() {
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
  if [ ! -x .cache/tools/bin/cargo-fuzz ]; then
    cargo install --locked --root .cache/tools cargo-fuzz
  fi
  export PATH=$PWD/.cache/tools/bin:$PATH
}

# For the S3 tests: Garage (a distributed S3 store in Rust, from crates.io), built once
# into .cache/tools with only what the tests use (about 10 minutes on 2 cores).
GARAGE_VERSION=2.5.0
need_garage() {
  local g=.cache/tools/bin/garage
  if [ ! -x "$g" ] || ! "$g" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    echo "== building garage $GARAGE_VERSION into .cache/tools (once)"
    cargo install --locked --root .cache/tools garage --version "$GARAGE_VERSION" \
      --no-default-features --features bundled-libs,lmdb
  fi
}

# Packages the tests and the demo use: a musl C compiler for zstd, partitioning,
# filesystem and volume tools (XFS, btrfs, NTFS, LVM, LUKS, md) for the sample disks, NBD clients, QEMU with OVMF and iPXE for the
# guests, systemd-boot (the demo machines' loader), cpio/kmod to read the Debian kernel's
# package, grub-common and grub-pc-bin (grub-mkimage: BIOS GRUB for the rescue and the
# demo machines; installing them installs no bootloader) and xorriso (the rescue's ISO).
BASE_PACKAGES=(musl-tools gdisk fdisk dosfstools mtools e2fsprogs util-linux binutils python3
  openssl qemu-utils libnbd-bin qemu-system-x86 ovmf ipxe-qemu systemd-boot-efi cpio kmod zstd
  grub-common grub-pc-bin xorriso
  xfsprogs btrfs-progs ntfs-3g lvm2 cryptsetup-bin mdadm)
