# Shared by scripts/test and scripts/demo: install what Lifeboat needs, idempotently.
# Source it; it defines functions only.

# Run as root, or through sudo when there is one.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the Debian packages given, running apt-get only for those missing.
need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
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

# Packages the tests and the demo use: a musl C compiler for zstd, partitioning and
# filesystem tools for the sample disks.
BASE_PACKAGES=(musl-tools gdisk fdisk dosfstools mtools e2fsprogs util-linux binutils python3 openssl qemu-utils libnbd-bin)
