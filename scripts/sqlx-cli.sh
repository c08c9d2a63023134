#!/usr/bin/env bash
# Install sqlx-cli (`cargo sqlx`, PostgreSQL only, rustls) once per machine
# under $TOOLS/sqlx-cli, building it outside the clone, and print the
# directory of its binaries. scripts/test.sh uses it to check that `.sqlx/`
# (the offline query data the build reads) matches the migrated schema.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VERSION=0.8.6
DIR="$TOOLS/sqlx-cli"
if [ ! -x "$DIR/bin/cargo-sqlx" ]; then
    log "building sqlx-cli $VERSION (a few minutes, once)"
    CARGO_TARGET_DIR="$TOOLS/sqlx-cli-build" cargo install sqlx-cli --version "$VERSION" \
        --no-default-features --features postgres,rustls --locked --root "$DIR" >&2 \
        || die "cargo install sqlx-cli $VERSION failed"
    rm -rf "$TOOLS/sqlx-cli-build"
fi
echo "$DIR/bin"
