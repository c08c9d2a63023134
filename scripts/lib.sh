# Shared helpers for the scripts: where the project lives, where built tools
# and data are cached (git-ignored), and small logging functions.
# Sourced, never run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MINDBOT_CACHE:-$ROOT/.cache}"
mkdir -p "$CACHE"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run apt-get install for the given packages, updating the lists once.
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
    if [ ! -f "$CACHE/.apt-updated" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        touch "$CACHE/.apt-updated"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 \
        || die "apt-get install $* failed"
}
