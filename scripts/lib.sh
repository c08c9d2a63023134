# Shared helpers for the scripts: where the project lives, where built tools
# and data are cached (git-ignored), and small logging functions.
# Sourced, never run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# This checkout's state: the local PostgreSQL cluster, servers' pid files and
# logs, and links to the tools below.
CACHE="${MINDBOT_CACHE:-$ROOT/.cache}"
# Built tools every checkout on this machine may reuse (the LiveKit server,
# the Python venvs, cargo's target directory), outside the clone so a fresh
# clone (CI) does not build them again.
TOOLS="${MINDBOT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/mindbot-agent}"
mkdir -p "$CACHE" "$TOOLS"

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

# Whether something accepts TCP connections on 127.0.0.1:$1.
port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Start a server in the background and wait up to 10 s for it to answer on a
# port: spawn_daemon NAME DIR PORT COMMAND... Its output goes to DIR/server.log,
# its pid to DIR/server.pid; on failure the log's tail is shown.
spawn_daemon() {
    local name="$1" dir="$2" port="$3"
    shift 3
    nohup "$@" >"$dir/server.log" 2>&1 9>&- &
    echo $! > "$dir/server.pid"
    for _ in $(seq 1 100); do
        port_answers "$port" && return
        sleep 0.1
    done
    tail -n 20 "$dir/server.log" >&2
    die "$name did not start (log: $dir/server.log)"
}

# Stop what spawn_daemon started in DIR, if it is running.
stop_daemon() {
    if [ -f "$1/server.pid" ]; then
        kill "$(cat "$1/server.pid")" 2>/dev/null || true
        rm -f "$1/server.pid"
    fi
}

# Build a Go command once per machine under $TOOLS, through the module proxy,
# and print its path: go_tool NAME PACKAGE VERSION (the binary is named after
# the package's last element).
go_tool() {
    local name="$1" pkg="$2" version="$3"
    local built="$TOOLS/$name-$version" bin
    bin="$(basename "$pkg")"
    if [ ! -x "$built/$bin" ]; then
        command -v go >/dev/null || die "the Go toolchain is needed to build $name (go not found)"
        log "building $name $version with $(go version | cut -d' ' -f3) (a few minutes, once)"
        rm -rf "$built.tmp" && mkdir -p "$built.tmp"
        GOBIN="$built.tmp" GOFLAGS=-mod=mod GOTOOLCHAIN=local go install "$pkg@$version" >&2 \
            || die "go install $pkg@$version failed"
        rm -rf "$built" && mv "$built.tmp" "$built"
    fi
    echo "$built/$bin"
}
