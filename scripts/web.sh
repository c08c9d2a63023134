#!/usr/bin/env bash
# The web app (web/): `build` installs its npm packages from the committed
# lockfile (`npm ci`, npm's cache under $TOOLS so a fresh clone downloads
# nothing twice) and builds it into web/dist, which mindbot-agent serves at /
# (http.web_root). Rebuilds only when a source file is newer than the build.
# `browser` prints the path of the Chromium the browser tests drive
# (Debian's, installed by scripts/deps.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT/web"

command -v npm >/dev/null || die "npm not found (scripts/deps.sh installs nodejs and npm)"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)' \
    || die "Node.js $(node --version) is too old for Vite: 20.19 or newer is needed"
export npm_config_cache="$TOOLS/npm-cache"

case "${1:-build}" in
build)
    # One builder at a time: tests call this concurrently, and two `npm ci`
    # in one directory remove each other's files.
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.web-build.lock"
    flock 9
    if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        log "npm ci (cache: $npm_config_cache)"
        npm ci --no-audit --no-fund --loglevel=error >&2
    fi
    if [ ! -f dist/index.html ] || [ -n "$(find src index.html vite.config.ts tsconfig.json package-lock.json -newer dist/index.html -print -quit)" ]; then
        log "building the web app into web/dist"
        npm run --silent build >&2
    fi
    ;;
browser)
    for b in /usr/bin/chromium /usr/bin/chromium-browser; do
        [ -x "$b" ] && { echo "$b"; exit 0; }
    done
    die "Chromium not found (scripts/deps.sh installs Debian's chromium)"
    ;;
*) die "usage: scripts/web.sh [build|browser]" ;;
esac
