#!/usr/bin/env bash
# Install the Debian packages that some tests need. Idempotent: packages already installed are
# skipped without a word, and nothing runs apt when all are there.
#
# Never fails `make test` on a machine that cannot install (no apt, not root, offline): it says
# what is missing and exits 0, and the tests that need those packages skip with a reason.
# Set CLR_DIST_DEPS_STRICT=1 (CI) to make a failed install an error.
set -euo pipefail

PACKAGES=(
    dataset-fashion-mnist   # Fashion-MNIST IDX files: tests/data/test_fashion_mnist.py
    g++                     # torch.compile's C++ kernels on the CPU: tests/test_compile.py
    # The one-node SLURM cluster of tests/slurm_cluster.py (tests/test_slurm.py)
    slurmctld slurmd slurm-client munge
)

say() { echo "install-debian-deps: $*" >&2; }

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

give_up() {
    say "$1; not installed: ${missing[*]} (the tests that need them will skip)"
    if [ "${CLR_DIST_DEPS_STRICT:-0}" = 1 ]; then exit 1; fi
    exit 0
}

command -v apt-get >/dev/null 2>&1 || give_up "apt-get not found (not Debian/Ubuntu?)"
[ "$(id -u)" -eq 0 ] || give_up "not root; run: sudo apt-get install -y ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive
say "installing ${missing[*]}"
# Try the package lists already on the machine first; update them only when that fails.
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || give_up "apt-get update failed (offline?)"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || give_up "apt-get install failed"
fi
say "installed ${missing[*]}"
