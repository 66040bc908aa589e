#!/usr/bin/env bash
# Installs what the real Docker engine integration test (test/engine.test.ts) needs.
#
#  * bookworm packages, installed normally with apt-get:
#      docker-registry (distribution v2 registry binary), busybox-static (tiny OS image),
#      runc, iptables, pigz, ca-certificates, python3-distro, python3-blinker
#  * trixie packages docker.io (dockerd 26), docker-cli, containerd (1.7), docker-buildx (0.13),
#    cosign (2.5, for the signing tests, test/signing.test.ts), oras (1.2, an independent reader of OCI referrers
#    for test/engine-attest.test.ts):
#      fetched with `apt-get download` through a PRIVATE apt configuration
#      (.cache/engine/apt: own sources.list, lists and archives) pointing at trixie on the
#      machine's own Debian mirror, then unpacked with `dpkg-deb -x` into
#      .cache/engine/root. Nothing is installed into the system from trixie and the
#      system's apt sources are never modified.
#
# Idempotent: re-running does nothing when everything is already in place.
# Usage: bash .ci/engine-deps.sh        (as root)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${STRATA_ENGINE_CACHE:-$REPO_ROOT/.cache/engine}"
ROOTFS="$CACHE/root"
TRIXIE_PKGS=(docker.io docker-cli containerd docker-buildx cosign oras)
# runc comes from bookworm: trixie's runc needs glibc 2.38 (bookworm has 2.36).
# python3-distro and python3-blinker: real Python packages the attestation test's image carries (test/engine-attest.test.ts).
BOOKWORM_PKGS=(docker-registry busybox-static runc iptables pigz ca-certificates python3-distro python3-blinker)
# Files that must exist after unpacking; also used to decide whether work is needed.
REQUIRED_BINS=(usr/sbin/dockerd usr/bin/docker usr/bin/containerd usr/bin/containerd-shim-runc-v2
               usr/libexec/docker/cli-plugins/docker-buildx usr/bin/cosign usr/bin/oras)

say() { printf '[engine-deps] %s\n' "$*"; }
die() { printf '[engine-deps] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs Debian packages)"
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "apt-get/dpkg-deb not found: this script needs Debian"
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] || say "warning: written for Debian bookworm, this is '${VERSION_CODENAME:-unknown}'"
ARCH="$(dpkg --print-architecture)"
START=$(date +%s)

# --- 1. bookworm packages ---------------------------------------------------------------
missing=()
for p in "${BOOKWORM_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing from the system's apt sources: ${missing[*]}"
  apt-get update -qq || die "apt-get update failed"
  # docker-registry ships a systemd unit; never start it (the harness runs its own registry).
  policy_created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || { [ $policy_created = 1 ] && rm -f /usr/sbin/policy-rc.d; die "apt-get install ${missing[*]} failed"; }
  [ $policy_created = 1 ] && rm -f /usr/sbin/policy-rc.d
  # Stop a registry service if the package's maintainer script started one anyway.
  if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
    systemctl stop docker-registry || true
  fi
else
  say "bookworm packages already installed: ${BOOKWORM_PKGS[*]}"
fi
command -v docker-registry >/dev/null || die "docker-registry binary missing after install"
[ -x /bin/busybox ] || die "/bin/busybox missing after installing busybox-static"

# --- 2. trixie packages, unpacked into the cache -----------------------------------------
have_all=1
for b in "${REQUIRED_BINS[@]}"; do [ -e "$ROOTFS/$b" ] || have_all=0; done
if [ $have_all = 1 ] && [ -s "$CACHE/versions.txt" ]; then
  say "trixie engine already unpacked in $ROOTFS:"
  sed 's/^/[engine-deps]   /' "$CACHE/versions.txt"
  say "done in $(( $(date +%s) - START ))s"
  exit 0
fi

# The mirror is whatever the machine itself uses for Debian (deb822 or one-line format).
MIRROR=""
if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
  MIRROR="$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ {print u; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
fi
if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list ]; then
  MIRROR="$(awk '$1=="deb" && $0 ~ / bookworm / {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list || true)"
fi
[ -n "$MIRROR" ] || die "could not find the Debian mirror in /etc/apt/sources.list{,.d/*.sources}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f /usr/share/keyrings/debian-archive-trixie-stable.gpg ] || say "warning: keyring has no trixie key file; relying on $KEYRING"
say "fetching trixie packages (${TRIXIE_PKGS[*]}) from $MIRROR via a private apt config"

APTDIR="$CACHE/apt"
mkdir -p "$APTDIR/etc/apt.conf.d" "$APTDIR/etc/preferences.d" "$APTDIR/etc/sources.list.d" \
         "$APTDIR/state/lists/partial" "$APTDIR/cache/archives/partial" "$CACHE/debs"
echo "deb [signed-by=$KEYRING] $MIRROR trixie main" >"$APTDIR/etc/sources.list"
: >"$APTDIR/state/status"   # an empty dpkg status: resolve nothing against the host
APT_OPTS=(
  -o "Dir::Etc=$APTDIR/etc"
  -o "Dir::Etc::sourcelist=$APTDIR/etc/sources.list"
  -o "Dir::Etc::sourceparts=$APTDIR/etc/sources.list.d"
  -o "Dir::Etc::parts=$APTDIR/etc/apt.conf.d"
  -o "Dir::Etc::preferencesparts=$APTDIR/etc/preferences.d"
  -o "Dir::State=$APTDIR/state"
  -o "Dir::State::status=$APTDIR/state/status"
  -o "Dir::Cache=$APTDIR/cache"
  -o "APT::Architecture=$ARCH"
  -o "Acquire::Languages=none"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"   # downloads land in a root-owned cache dir
)
apt-get "${APT_OPTS[@]}" -qq update || die "private apt update for trixie failed (mirror $MIRROR)"

cd "$CACHE/debs"
rm -f ./*.deb
apt-get "${APT_OPTS[@]}" -qq download "${TRIXIE_PKGS[@]}" || die "apt-get download ${TRIXIE_PKGS[*]} from trixie failed"

rm -rf "$ROOTFS.tmp" && mkdir -p "$ROOTFS.tmp"
: >"$CACHE/versions.txt.tmp"
for deb in ./*.deb; do
  dpkg-deb -x "$deb" "$ROOTFS.tmp" || die "dpkg-deb -x $deb failed"
  dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >>"$CACHE/versions.txt.tmp"
done
for b in "${REQUIRED_BINS[@]}"; do
  [ -e "$ROOTFS.tmp/$b" ] || die "expected $b in the unpacked trixie packages, not found"
done
# Smoke-check that the trixie binaries run on this system (glibc etc.) before publishing them.
for b in usr/sbin/dockerd usr/bin/docker usr/bin/containerd "usr/bin/containerd-shim-runc-v2 -v" "usr/bin/cosign version"; do
  set -- $b
  "$ROOTFS.tmp/$1" "${2:---version}" >/dev/null 2>&1 || die "$1 from trixie does not run on this system: $("$ROOTFS.tmp/$1" "${2:---version}" 2>&1 | head -3)"
done
"$ROOTFS.tmp/usr/libexec/docker/cli-plugins/docker-buildx" version >/dev/null 2>&1 \
  || die "docker-buildx from trixie does not run on this system: $("$ROOTFS.tmp/usr/libexec/docker/cli-plugins/docker-buildx" version 2>&1 | head -3)"
command -v runc >/dev/null && runc --version >/dev/null || die "runc (bookworm) missing or broken"
rm -rf "$ROOTFS" && mv "$ROOTFS.tmp" "$ROOTFS"
mv "$CACHE/versions.txt.tmp" "$CACHE/versions.txt"

say "unpacked into $ROOTFS:"
sed 's/^/[engine-deps]   /' "$CACHE/versions.txt"
say "done in $(( $(date +%s) - START ))s"
