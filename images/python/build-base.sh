#!/usr/bin/env bash
# Build pygent's Debian base image with debootstrap: no container registry is used.
#
#   build-base.sh TAG [SUITE]
#
# Makes a minbase Debian (python3, git, coreutils, procps, ca-certificates, ...)
# in a temporary directory, trims it (apt lists, docs, man pages, locales other
# than C, caches, __pycache__), and imports it into the engine as TAG with
# `docker import`. Does nothing when TAG is already on the engine.
#
# The Debian mirror is read from this machine's apt sources
# (/etc/apt/sources.list.d/*.sources `URIs:`, or /etc/apt/sources.list);
# PYGENT_DEBIAN_MIRROR overrides it. debootstrap is installed with apt-get when
# missing. Downloaded .debs are kept in PYGENT_DEBOOTSTRAP_CACHE (default
# /var/cache/pygent/debootstrap) so a rebuild on the same machine skips them.
set -euo pipefail

TAG=${1:?usage: build-base.sh TAG [SUITE]}
SUITE=${2:-${PYGENT_DEBIAN_SUITE:-bookworm}}
INCLUDE=python3,git,coreutils,procps,ca-certificates,findutils,grep,sed,tar,gzip,xz-utils,bzip2,patch,diffutils
CACHE=${PYGENT_DEBOOTSTRAP_CACHE:-/var/cache/pygent/debootstrap}

log() { printf 'build-base: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG is already on the engine"
    exit 0
fi

SUDO=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "debootstrap needs root (or sudo)"
    SUDO=(sudo -n)
fi

apt_install() {
    # apt-get install, updating the package lists once if they do not know the package.
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 \
        || { "${SUDO[@]}" apt-get update -q >&2 \
             && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2; }
}

DEBOOTSTRAP=$(command -v debootstrap || echo /usr/sbin/debootstrap)
if [ ! -x "$DEBOOTSTRAP" ]; then
    command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and apt-get is not available to install it"
    log "installing debootstrap"
    apt_install debootstrap debian-archive-keyring
    DEBOOTSTRAP=$(command -v debootstrap || echo /usr/sbin/debootstrap)
fi

# The mirror: first non-security Debian URI in the machine's apt sources.
mirror_from_apt() {
    local f line w
    local -a words
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        while read -r line; do
            case "$line" in URIs:*) ;; *) continue ;; esac
            read -r -a words <<<"${line#URIs:}"
            for w in "${words[@]}"; do
                case "$w" in *security*) ;; http://* | https://* | file:/*) echo "$w"; return 0 ;; esac
            done
        done <"$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        while read -r line; do
            read -r -a words <<<"$line"
            [ "${words[0]:-}" = deb ] || continue
            for w in "${words[@]:1}"; do
                case "$w" in \[* | *\] | *=*) continue ;; esac  # [arch=... signed-by=...]
                case "$w" in *security*) ;; http://* | https://* | file:/*) echo "$w"; return 0 ;; esac
                break
            done
        done <"$f"
    done
    return 1
}
MIRROR=${PYGENT_DEBIAN_MIRROR:-$(mirror_from_apt || true)}
[ -n "$MIRROR" ] || die "no Debian mirror found in the apt sources; set PYGENT_DEBIAN_MIRROR"

KEYRING=()
for k in /usr/share/keyrings/debian-archive-keyring.gpg /usr/share/keyrings/debian-archive-keyring.pgp; do
    if [ -r "$k" ]; then KEYRING=(--keyring="$k"); break; fi
done

# Work in memory when /dev/shm is a usable tmpfs (exec, dev, >= 2 GiB free): dpkg's
# unpacking is then about twice as fast as on disk. PYGENT_BASE_WORKDIR overrides.
pick_workdir() {
    if [ -n "${PYGENT_BASE_WORKDIR:-}" ]; then echo "$PYGENT_BASE_WORKDIR"; return; fi
    local opts avail
    opts=$(awk '$2 == "/dev/shm" && $3 == "tmpfs" { print $4 }' /proc/mounts 2>/dev/null | tail -n 1)
    avail=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
    if [ -n "$opts" ] && [[ ",$opts," != *,noexec,* && ",$opts," != *,nodev,* ]] \
        && [ "${avail:-0}" -ge 2097152 ] && [ -w /dev/shm ]; then
        echo /dev/shm
    else
        echo "${TMPDIR:-/var/tmp}"
    fi
}
WORK=$("${SUDO[@]}" mktemp -d "$(pick_workdir)/pygent-base.XXXXXX")
ROOT=$WORK/rootfs
cleanup() {
    # debootstrap may leave /proc, /sys or /dev mounted inside the target on failure:
    # unmount before deleting, and never cross into another filesystem.
    local m
    for m in $(awk -v r="$ROOT" 'index($2, r) == 1 { print $2 }' /proc/mounts 2>/dev/null | sort -r); do
        "${SUDO[@]}" umount -l "$m" 2>/dev/null || true
    done
    "${SUDO[@]}" rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

"${SUDO[@]}" mkdir -p "$CACHE"
CACHE_OPT=()
if "$DEBOOTSTRAP" --help 2>&1 | grep -q -- '--cache-dir'; then CACHE_OPT=(--cache-dir="$CACHE"); fi

log "debootstrap $SUITE (minbase + $INCLUDE)"
# DPKG_FORCE=unsafe-io: no fsync per unpacked file (the tree is thrown away after import).
"${SUDO[@]}" env DPKG_FORCE=unsafe-io,security-mac,downgrade "$DEBOOTSTRAP" --variant=minbase --components=main --include="$INCLUDE" \
    "${KEYRING[@]}" "${CACHE_OPT[@]}" "$SUITE" "$ROOT" "$MIRROR" >&2 \
    || { tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2 2>/dev/null || true; die "debootstrap failed"; }

log "trimming"
"${SUDO[@]}" sh -eu -c '
cd "$1"
rm -rf var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/lib/dpkg/*-old \
       var/log/* usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/lintian \
       usr/share/linda usr/share/bug tmp/* var/tmp/* root/.cache
find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
find usr/lib/locale -mindepth 1 -maxdepth 1 ! -name "C.*" -exec rm -rf {} + 2>/dev/null || true
find . -xdev -depth -type d -name __pycache__ -exec rm -rf {} +
# later apt installs in derived images skip docs, man pages and translations too
mkdir -p etc/dpkg/dpkg.cfg.d etc/apt/apt.conf.d
cat > etc/dpkg/dpkg.cfg.d/01-pygent-nodoc <<NODOC
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
NODOC
cat > etc/apt/apt.conf.d/01-pygent-slim <<SLIM
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
SLIM
' sh "$ROOT"

log "importing as $TAG"
"${SUDO[@]}" tar -C "$ROOT" --numeric-owner --xattrs -c \
    --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* --exclude=./run/* . \
  | docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["bash"]' \
      --change "LABEL io.pygent.base=debootstrap-$SUITE" \
      --message "pygent base: debootstrap --variant=minbase $SUITE" \
      - "$TAG" >&2
log "done: $TAG"
