#!/usr/bin/env bash
# Make headless Chromium and its ChromeDriver available for the `view` browser tests
# (Debian's chromium + chromium-driver), installing them only where missing.
# Why a script: CI runs on a fresh machine and the README's `make test` does all set-up.
set -euo pipefail

log() { echo "[browser] $*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if ! [ -r /etc/debian_version ]; then
  log "chromium and chromedriver are missing and this is not a Debian-like machine: install them yourself"
  exit 1
fi
log "installing chromium chromium-driver (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; then
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
command -v chromium >/dev/null && command -v chromedriver >/dev/null
