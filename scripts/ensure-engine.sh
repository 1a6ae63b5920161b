#!/usr/bin/env bash
# Make a Docker engine answer, installing and starting one only where none does.
# Why a script and not docs: CI and a fresh machine have the Docker client only,
# and the README promises one command does all the set-up.
set -euo pipefail

log() { echo "[engine] $*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if timeout 10 docker info >/dev/null 2>&1; then
  log "an engine already answers; leaving it alone"
  exit 0
fi

if ! [ -r /etc/debian_version ]; then
  log "no Docker engine answers and this is not a Debian-like machine: start one yourself (e.g. 'sudo systemctl start docker')"
  exit 1
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v runsc >/dev/null 2>&1 || need+=(runsc)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" iptables iproute2 >/dev/null
fi

# Register gVisor as an extra runtime for the engine we manage ourselves.
# --network=none: Debian's runsc (2022) believes it runs in the host's network
# namespace on recent kernels and refuses to start with networking; sandboxes
# have no network by default anyway (pygent refuses network=True on this runtime).
conf=/etc/docker/daemon.json
if command -v runsc >/dev/null 2>&1 && ! grep -q -- '--network=none' "$conf" 2>/dev/null; then
  if [ -s "$conf" ] && ! grep -q runsc "$conf"; then
    log "$conf exists without runsc; leaving it alone (add runsc yourself to use gVisor)"
  else
    $SUDO mkdir -p /etc/docker
    echo "{\"runtimes\": {\"runsc\": {\"path\": \"$(command -v runsc)\", \"runtimeArgs\": [\"--network=none\"]}}}" | $SUDO tee "$conf" >/dev/null
  fi
fi

log "starting dockerd in the background (log: /tmp/pygent-dockerd.log)"
$SUDO bash -c 'nohup dockerd >/tmp/pygent-dockerd.log 2>&1 &'
for _ in $(seq 1 60); do
  if timeout 5 docker info >/dev/null 2>&1; then log "engine is up"; exit 0; fi
  sleep 1
done
log "dockerd did not answer within 60 s; see /tmp/pygent-dockerd.log"
tail -n 20 /tmp/pygent-dockerd.log >&2 || true
exit 1
