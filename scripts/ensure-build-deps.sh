#!/usr/bin/env bash
# Install the host programs the bundled image builds use, where they are missing
# (Debian packages): static busybox and bash for the minimal image, debootstrap
# for the python image's Debian base. Why a script: pygent-runner itself never
# installs system packages (it names the command instead); the checkout's
# `make images` does its own set-up, so it runs this first.
set -euo pipefail

log() { echo "[build-deps] $*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
[ -x /bin/bash-static ] || need+=(bash-static)
{ command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ]; } || need+=(debootstrap)
ls /usr/share/keyrings/debian-archive-keyring.* >/dev/null 2>&1 || need+=(debian-archive-keyring)
[ "${#need[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  log "missing ${need[*]} and apt-get is not available: install them yourself"
  exit 1
fi
log "installing ${need[*]} (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
