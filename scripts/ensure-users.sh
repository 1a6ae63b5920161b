#!/usr/bin/env bash
# Make the non-root user the tests run pygent as, and what its engines need.
# Why: pygent must work for a user in the `docker` group and for rootless engines,
# and CI (root, fresh machine) has neither the user nor the packages. Idempotent.
#
# - user $PYGENT_TEST_USER (default pygent-user), home /home/$USER, in group `docker`;
# - /etc/subuid and /etc/subgid ranges for it (rootless Podman and Docker map uid 1000
#   inside to a subordinate uid outside);
# - the shared engine's socket group-accessible to `docker` (chgrp only: the running
#   dockerd is never restarted or reconfigured);
# - Debian packages: openssh-server and openssh-client (the ssh:// tests start their own
#   sshd; the system's is never started), uidmap (newuidmap for rootless engines),
#   podman, catatonit and crun (rootless Podman run by the user), rootlesskit (rootless
#   Docker: docker.io's contrib/dockerd-rootless.sh runs dockerd under it).
set -euo pipefail

USER_NAME=${PYGENT_TEST_USER:-pygent-user}
SOCK=/var/run/docker.sock
log() { echo "[users] $*" >&2; }
if [ "$(id -u)" -ne 0 ]; then log "run as root (it adds a user and groups)"; exit 1; fi

need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v newuidmap >/dev/null 2>&1 || need+=(uidmap)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# Rootless Podman for the user (its own API service; tests/engines/test_rootless_podman.py).
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v catatonit >/dev/null 2>&1 || need+=(catatonit)
command -v crun >/dev/null 2>&1 || need+=(crun)
# Rootless Docker for the user (tests/engines/test_rootless_engines.py, tests/support/rootless_docker.py).
command -v rootlesskit >/dev/null 2>&1 || need+=(rootlesskit)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d (or no init) keeps the packages from starting the system's sshd; we never use it.
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

getent group docker >/dev/null || groupadd --system docker
if ! id "$USER_NAME" >/dev/null 2>&1; then
  log "adding user $USER_NAME (group docker)"
  useradd --create-home --shell /bin/bash --groups docker "$USER_NAME"
else
  id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx docker || usermod -aG docker "$USER_NAME"
fi

# No password ("*"), yet not locked ("!"): key logins to the tests' own sshd must work.
[ "$(getent shadow "$USER_NAME" | cut -d: -f2)" = "*" ] || usermod -p '*' "$USER_NAME"

for f in /etc/subuid /etc/subgid; do
  touch "$f"
  if ! grep -q "^$USER_NAME:" "$f"; then
    # 65536 ids above every range already given out (100000 when none is).
    start=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' "$f")
    echo "$USER_NAME:$start:65536" >>"$f"
    log "$f: $USER_NAME:$start:65536"
  fi
done

if [ -S "$SOCK" ]; then
  if [ "$(stat -c %G "$SOCK")" != docker ] || [ "$(( 0$(stat -c %a "$SOCK") & 060 ))" -ne 48 ]; then
    log "giving group docker read/write on $SOCK"
    chgrp docker "$SOCK"
    chmod g+rw "$SOCK"
  fi
fi
echo "$USER_NAME"
