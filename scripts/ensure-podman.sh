#!/usr/bin/env bash
# Make a Podman API service answer at $PYGENT_PODMAN_SOCKET, installing Podman where missing.
# Why: Podman is the second engine pygent supports (PYGENT_BACKEND=podman); CI runs the
# sandbox conformance suite on it, and a fresh machine has neither.
set -euo pipefail

SOCK=${PYGENT_PODMAN_SOCKET:-/run/pygent-podman.sock}
LOG=${PYGENT_PODMAN_LOG:-/tmp/pygent-podman.log}
log() { echo "[podman] $*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if curl -sf --max-time 5 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; then
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
# - containers get rlimits within this machine's hard limits (Podman's defaults, nofile
#   1048576 and nproc 4194304, fail where the hard limits are lower, e.g. 20000 here);
# - catatonit is the init (`Init: true` in the create body);
# - cgroupfs and a file event log: no systemd in containers or CI machines.
# nproc: the pids cgroup is what bounds a sandbox; 16384 stays under the hard limit Podman's
# own process gets (32768 seen here, below the shell's).
hard=$(ulimit -Hn); [ "$hard" = unlimited ] && hard=65536; [ "$hard" -gt 65536 ] && hard=65536
nproc=16384
# gVisor without its own network (as `make engine` registers it with Docker): Debian's
# runsc cannot start with networking on this kernel, and sandboxes have none anyway.
if command -v runsc >/dev/null 2>&1; then
  $SUDO mkdir -p /usr/local/lib/pygent
  printf '#!/bin/sh\nexec %s --network=none "$@"\n' "$(command -v runsc)" | $SUDO tee /usr/local/lib/pygent/runsc-nonet >/dev/null
  $SUDO chmod 755 /usr/local/lib/pygent/runsc-nonet
fi

# Podman 4.3 reads no containers.conf.d drop-in: write containers.conf when there is none
# (or it is ours); an existing one of the user's is left alone (the create body asks for
# the same rlimits anyway).
conf=/etc/containers/containers.conf
if [ -s "$conf" ] && ! grep -q "written by pygent" "$conf"; then
  log "$conf exists and is not ours; leaving it alone"
  conf=/dev/null
fi
$SUDO mkdir -p /etc/containers
$SUDO tee "$conf" >/dev/null <<CONF
# written by pygent (scripts/ensure-podman.sh)
[containers]
default_ulimits = ["nofile=${hard}:${hard}", "nproc=${nproc}:${nproc}"]
init_path = "$(command -v catatonit)"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"

[engine.runtimes]
runsc = ["/usr/local/lib/pygent/runsc-nonet"]
CONF

log "starting 'podman system service' at $SOCK (log: $LOG)"
# From /: the service (and every conmon it starts) keeps its working directory, and a
# checkout removed under it made every container start fail ("Failed to get working directory").
# Every descriptor goes to the log: a process left holding the caller's stdout or stderr (a
# pipe, when a test or CI captures this script's output) keeps the caller waiting for an EOF
# that never comes.
$SUDO bash -c "cd / && exec nohup podman system service --time=0 unix://$SOCK </dev/null >$LOG 2>&1" </dev/null >/dev/null 2>&1 &
for _ in $(seq 1 30); do
  if curl -sf --max-time 5 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; then log "Podman is up"; exit 0; fi
  sleep 1
done
log "Podman did not answer within 30 s; see $LOG"
tail -n 20 "$LOG" >&2 || true
exit 1
