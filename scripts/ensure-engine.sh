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
command -v crun >/dev/null 2>&1 || need+=(crun)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" iptables iproute2 >/dev/null
fi

# Register the extra runtimes for the engine we manage ourselves:
# - crun, a small C OCI runtime: starting a container costs the engine ~25% less
#   CPU than with runc here, so pygent picks it when the engine has it;
# - gVisor (runsc) with --network=none: Debian's runsc (2022) believes it runs in
#   the host's network namespace on recent kernels and refuses to start with
#   networking; sandboxes have no network by default anyway (pygent refuses
#   network=True on this runtime).
conf=/etc/docker/daemon.json
if [ -s "$conf" ] && ! grep -q '"runsc"' "$conf"; then
  log "$conf exists and is not ours; leaving it alone (register runsc and crun yourself)"
else
  runtimes=()
  command -v runsc >/dev/null 2>&1 && runtimes+=("\"runsc\": {\"path\": \"$(command -v runsc)\", \"runtimeArgs\": [\"--network=none\"]}")
  command -v crun >/dev/null 2>&1 && runtimes+=("\"crun\": {\"path\": \"$(command -v crun)\"}")
  if [ "${#runtimes[@]}" -gt 0 ]; then
    $SUDO mkdir -p /etc/docker
    (IFS=,; echo "{\"runtimes\": {${runtimes[*]}}}") | $SUDO tee "$conf" >/dev/null
  fi
fi

# crun refuses a hybrid cgroup layout whose cgroup2 side still holds controllers
# ("cgroups in hybrid mode not supported"): give those controllers (hugetlb here)
# their own v1 hierarchy, as the others have, when no cgroup2 group uses them.
unified=/sys/fs/cgroup/unified
if [ -r "$unified/cgroup.controllers" ] && [ -z "$(cat "$unified/cgroup.subtree_control" 2>/dev/null)" ]; then
  for c in $(cat "$unified/cgroup.controllers"); do
    if ! grep -q " /sys/fs/cgroup/$c " /proc/mounts; then
      log "moving the $c cgroup controller to its own v1 hierarchy (for crun)"
      $SUDO mkdir -p "/sys/fs/cgroup/$c" && $SUDO mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || true
    fi
  done
fi

# The engine's state lives in RAM (PYGENT_ENGINE_STATE=disk keeps Docker's default
# /var/lib/docker). Why: a sandbox engine creates and deletes container directories
# all day, and on this machine's ext4 (no journal, online discard) inode allocation
# and discards cost ~10% of all CPU in a burst of sandboxes (perf); raw
# create/start/remove went from 18 to 24 containers/s on tmpfs. Sandboxes have a
# read-only root, so only images and metadata live there; images are rebuilt on
# first use after a reboot.
args=()
if [ "${PYGENT_ENGINE_STATE:-ram}" = "ram" ]; then
  root=/var/lib/pygent-docker
  if ! mountpoint -q "$root" 2>/dev/null; then
    $SUDO mkdir -p "$root"
    $SUDO mount -t tmpfs -o mode=0711 tmpfs "$root"
  fi
  args+=(--data-root "$root")
  log "engine state in RAM at $root (PYGENT_ENGINE_STATE=disk for /var/lib/docker)"
fi

log "starting dockerd in the background (log: /tmp/pygent-dockerd.log)"
# From /: a daemon must not hold the caller's directory (a removed checkout breaks Podman's conmon).
# Every descriptor goes to the log: a process left holding the caller's stdout or stderr (a
# pipe, when a test or CI captures this script's output) keeps the caller waiting for an EOF
# that never comes.
$SUDO bash -c "cd / && exec nohup dockerd ${args[*]} </dev/null >/tmp/pygent-dockerd.log 2>&1" </dev/null >/dev/null 2>&1 &
for _ in $(seq 1 60); do
  if timeout 5 docker info >/dev/null 2>&1; then log "engine is up"; exit 0; fi
  sleep 1
done
log "dockerd did not answer within 60 s; see /tmp/pygent-dockerd.log"
tail -n 20 /tmp/pygent-dockerd.log >&2 || true
exit 1
