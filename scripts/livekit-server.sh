#!/usr/bin/env bash
# Install (once) and optionally start a LiveKit server for development and tests.
#
#   scripts/livekit-server.sh install   build the pinned server (once per machine, under
#                                       ~/.cache/mindbot-agent) and link it into .cache/livekit/bin
#   scripts/livekit-server.sh start     install if needed, start on 127.0.0.1 in dev mode
#                                       unless something answers at LIVEKIT_URL already
#   scripts/livekit-server.sh stop
#
# The server comes from its Go module, built with the machine's Go toolchain
# through the module proxy; the binary is cached, so later runs are instant.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

LIVEKIT_VERSION="v1.13.5"
LK_DIR="$CACHE/livekit"
LK_BIN="$LK_DIR/bin/server"
LIVEKIT_URL="${LIVEKIT_URL:-ws://127.0.0.1:7880}"
LK_PORT="$(printf '%s' "$LIVEKIT_URL" | sed -E 's#^[a-z]+://[^:/]+:?([0-9]*).*#\1#')"
LK_PORT="${LK_PORT:-7880}"

install() {
    if [ -x "$LK_BIN" ] && [ "$(cat "$LK_DIR/version" 2>/dev/null)" = "$LIVEKIT_VERSION" ]; then
        return
    fi
    # Built once per machine under $TOOLS, then linked into this checkout.
    local built
    built="$(go_tool livekit-server github.com/livekit/livekit-server/cmd/server "$LIVEKIT_VERSION")"
    mkdir -p "$LK_DIR/bin"
    ln -sfn "$built" "$LK_BIN"
    echo "$LIVEKIT_VERSION" > "$LK_DIR/version"
}

answers() { port_answers "$LK_PORT"; }

start() {
    # Tests start private servers from .cache/livekit/bin, so the link is made
    # even when a server already answers.
    install
    if answers; then
        log "something answers on 127.0.0.1:$LK_PORT; using it"
        return
    fi
    local cfg="$LK_DIR/livekit.yaml"
    # Dev keys: devkey / secret. One muxed UDP port; loopback only.
    cat > "$cfg" <<YAML
port: $LK_PORT
bind_addresses: ["127.0.0.1"]
rtc:
  tcp_port: ${MINDBOT_LIVEKIT_TCP_PORT:-7881}
  # One UDP port for every peer connection (a range costs a port per
  # connection and runs out at a few hundred participants).
  udp_port: ${MINDBOT_LIVEKIT_UDP_PORT:-7882}
  use_external_ip: false
  node_ip: 127.0.0.1
keys:
  ${LIVEKIT_API_KEY:-devkey}: ${LIVEKIT_API_SECRET:-secret}
logging:
  level: ${MINDBOT_LIVEKIT_LOG_LEVEL:-info}
YAML
    if [ -n "${MINDBOT_LIVEKIT_WEBHOOK_URL:-}" ]; then
        printf 'webhook:\n  api_key: %s\n  urls: ["%s"]\n' "${LIVEKIT_API_KEY:-devkey}" "$MINDBOT_LIVEKIT_WEBHOOK_URL" >> "$cfg"
    fi
    log "starting livekit-server on 127.0.0.1:$LK_PORT"
    spawn_daemon livekit-server "$LK_DIR" "$LK_PORT" "$LK_BIN" --config "$cfg"
}

stop() { stop_daemon "$LK_DIR"; }

case "${1:-start}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 install|start|stop" ;;
esac
