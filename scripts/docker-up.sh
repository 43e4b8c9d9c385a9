#!/usr/bin/env bash
# Bring up what the image side of ppml-build needs, idempotently:
#   a Docker engine, the distribution v2 registry, debootstrap, htpasswd.
# Safe to run again: it installs only what is missing and starts dockerd only if no engine answers.
#
# dockerd is started without the default bridge (no 172.17/16 network; containers use
# --network none or host) so nothing ever leaves 127.0.0.0/8.
#
# Environment:
#   DOCKERD_LOG        where dockerd logs (default /var/log/ppml-dockerd.log)
#   DOCKER_UP_TIMEOUT  seconds to wait for the engine (default 60)
set -euo pipefail

log() { printf 'docker-up: %s\n' "$*"; }
die() { printf 'docker-up: error: %s\n' "$*" >&2; exit 1; }

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/ppml-dockerd.log}
TIMEOUT=${DOCKER_UP_TIMEOUT:-60}

engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# Fast path: everything present and an engine answering → say so and do nothing.
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        die "missing ${missing[*]}; run this script as root (or: sudo apt-get install -y ${missing[*]})"
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them with your distribution's tools"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    log "installed ${missing[*]}"
else
    log "packages present (dockerd, docker-registry, debootstrap, htpasswd)"
fi

# The Debian package enables a systemd service for the registry on :5000; we run our own
# registries on free ports, so a stray one is harmless, but do not start it ourselves.

if engine_answers; then
    log "engine already running (server $(docker version --format '{{.Server.Version}}'))"
    exit 0
fi

if [[ -n ${DOCKER_HOST:-} && ${DOCKER_HOST} != unix:///var/run/docker.sock ]]; then
    die "DOCKER_HOST=${DOCKER_HOST} does not answer; unset it to use the local engine this script starts"
fi
[[ $(id -u) -eq 0 ]] || die "no engine answers and starting dockerd needs root"

if pgrep -x dockerd >/dev/null 2>&1; then
    log "dockerd is running but not answering yet; waiting"
else
    # containerd is spawned by dockerd itself when no system containerd is running.
    log "starting dockerd (no bridge, no iptables; log: ${DOCKERD_LOG})"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    nohup dockerd --bridge=none --iptables=false --ip-masq=false \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    disown || true
fi

for ((i = 0; i < TIMEOUT; i++)); do
    if engine_answers; then
        log "engine up after ${i}s (server $(docker version --format '{{.Server.Version}}'))"
        exit 0
    fi
    sleep 1
done
tail -n 20 "$DOCKERD_LOG" >&2 || true
die "dockerd did not answer within ${TIMEOUT}s; see ${DOCKERD_LOG}"
