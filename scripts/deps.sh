#!/usr/bin/env bash
# System packages the build needs, installed only when missing: a C toolchain,
# pkg-config and libopus (Opus codec), cmake (aws-lc, the WebRTC stack's
# crypto), espeak-ng (the speech the voice tests synthesise and hear), Node.js
# and npm (the web app, web/), Chromium (the browser tests drive Debian's),
# and redis-server and haproxy (the multi-node LiveKit cluster, scripts/cluster.sh).
# Rust and Go themselves must already be installed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v cmake >/dev/null || missing+=(cmake)
pkg-config --exists opus 2>/dev/null || missing+=(libopus-dev)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v chromium >/dev/null || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
