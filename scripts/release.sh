#!/usr/bin/env bash
# The release binary as it ships: built with the release profile, then its
# debug info split off for crash analysis and the binary stripped of it.
#
#   scripts/release.sh [OUTDIR]          build, then split into OUTDIR (default dist/)
#   scripts/release.sh --split BIN OUTDIR  split an already built binary
#
# OUTDIR gets `mindbot-agent` (no debug sections, symbols kept so a panic's
# backtrace still names functions; a .gnu_debuglink names the debug file) and
# `mindbot-agent.debug` (the DWARF, for gdb or addr2line: put it beside the
# binary or under /usr/lib/debug). Needs binutils' objcopy.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

split() {
    local bin="$1" out="$2"
    command -v objcopy >/dev/null || apt_install binutils
    mkdir -p "$out"
    local name
    name="$(basename "$bin")"
    objcopy --only-keep-debug "$bin" "$out/$name.debug"
    # The debuglink's CRC is of the .debug file; objcopy finds it by its
    # name relative to the working directory, so run it from $out.
    (cd "$out" && objcopy --strip-debug --add-gnu-debuglink="$name.debug" "$bin" "$name.tmp" && mv "$name.tmp" "$name")
    log "$out/$name: $(du -h "$out/$name" | cut -f1) (was $(du -h "$bin" | cut -f1)); debug info in $name.debug"
}

if [ "${1:-}" = "--split" ]; then
    [ $# -eq 3 ] || die "usage: $0 --split BIN OUTDIR"
    split "$(realpath "$2")" "$(realpath -m "$3")"
    exit 0
fi
out="$(realpath -m "${1:-$ROOT/dist}")"
cargo build --release --locked -p mindbot-agent
target="${CARGO_TARGET_DIR:-$ROOT/target}"
split "$(realpath "$target/release/mindbot-agent")" "$out"
