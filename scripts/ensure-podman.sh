#!/usr/bin/env bash
# Make a Podman API service answer at $PYGENT_PODMAN_SOCKET, installing Podman where missing.
# Why: Podman is the second engine pygent supports (PYGENT_BACKEND=podman); CI runs the
# sandbox conformance suite on it, and a fresh machine has neither.
set -euo pipefail

SOCK=${PYGENT_PODMAN_SOCKET:-/run/pygent-podman.sock}
log() { echo "[podman] $*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if curl -sf --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; then
  log "a Podman service already answers at $SOCK"
  exit 0
fi
if ! [ -r /etc/debian_version ]; then
  log "no Podman service at $SOCK and this is not a Debian-like machine: run 'podman system service --time=0 unix://$SOCK'"
  exit 1
fi

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v catatonit >/dev/null 2>&1 || need+=(catatonit)
command -v crun >/dev/null 2>&1 || need+=(crun)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

# Our engine's settings, in a drop-in of its own (a user's containers.conf is left alone):
# - containers get rlimits within this machine's hard limits (Podman's default nofile
#   of 1048576 fails where the hard limit is lower, e.g. 20000 here);
# - catatonit is the init (`Init: true` in the create body);
# - cgroupfs and a file event log: no systemd in containers or CI machines.
hard=$(ulimit -Hn)
$SUDO mkdir -p /etc/containers/containers.conf.d
$SUDO tee /etc/containers/containers.conf.d/50-pygent.conf >/dev/null <<CONF
[containers]
default_ulimits = ["nofile=${hard}:${hard}"]
init_path = "$(command -v catatonit)"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF

log "starting 'podman system service' at $SOCK (log: /tmp/pygent-podman.log)"
$SUDO bash -c "nohup podman system service --time=0 unix://$SOCK >/tmp/pygent-podman.log 2>&1 &"
for _ in $(seq 1 30); do
  if curl -sf --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; then log "Podman is up"; exit 0; fi
  sleep 1
done
log "Podman did not answer within 30 s; see /tmp/pygent-podman.log"
tail -n 20 /tmp/pygent-podman.log >&2 || true
exit 1
