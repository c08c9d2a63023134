#!/usr/bin/env bash
# Docs that cannot go stale: every repository path a doc or a comment names
# must exist in the checkout. Scans README.md, docs/**/*.md and the crates'
# README.md whole, and the comments (and Python docstrings) of config.toml and
# the other TOML files, *.rs, *.sh, *.py, *.ts, *.tsx, *.mjs, *.css, the
# deployment files (Containerfile, YAML, systemd unit) and .ci/run.
# A path counts when its first part is a top-level entry of the repository
# (agent/, scripts/, migrations/, ...) or an entry of a folder it may be
# written relative to: the crate or package of the file that names it (the
# nearest folder with a Cargo.toml or package.json), that crate's src/, or
# the file's own folder; it passes when it exists relative to one of them.
# Existence is git's view of the tree (tracked files, and untracked ones not
# ignored), so a path only a build makes does not pass. Not paths: URLs and
# anything after `/`, `~` or `$`; globs (`*`); placeholders (`<name>`, `{x}`,
# `...`); paths the text marks as examples (`e.g.`, `for example`, `like`,
# `such as` just before); the few in ALLOWED below, each with its reason.
#
#   scripts/check-paths.sh    exit 1 naming file:line and each missing path
#
# scripts/test.sh runs it first, before anything is built.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

command -v python3 >/dev/null || die "python3 not found (the check is a Python script)"
git ls-files -z --cached --others --exclude-standard | python3 -c '
import os, re, sys

# Paths the docs name on purpose although the tree does not hold them.
ALLOWED = {
    "web/dist": "vite build output (scripts/web.sh build), git-ignored",
}

files = [f for f in sys.stdin.read().split("\0") if f and os.path.isfile(f)]
present = set(files)
for f in files:
    parts = f.split("/")
    for i in range(1, len(parts)):
        present.add("/".join(parts[:i]))

def children(folder):
    prefix = folder + "/" if folder else ""
    return {p[len(prefix):].split("/")[0] for p in present if p.startswith(prefix) and p != folder}

top = children("")

def package_dir(path):
    d = os.path.dirname(path)
    while d:
        if d + "/Cargo.toml" in present or d + "/package.json" in present:
            return d
        d = os.path.dirname(d)
    return ""

def is_doc(f):
    return f == "README.md" or f.endswith("/README.md") or (f.startswith("docs/") and f.endswith(".md"))

SLASH_COMMENTS = (".rs", ".ts", ".tsx", ".mjs", ".js", ".css")
HASH_COMMENTS = (".sh", ".py", ".toml", ".yml", ".yaml", ".service", "Containerfile", ".gitignore", ".containerignore")

def slash_comment(line):
    """The text after a // that does not follow a colon (URLs), or after /* or a leading *."""
    for m in re.finditer(r"//|/\*", line):
        if m.group() == "/*" or line[m.start() - 1 : m.start()] != ":":
            return line[m.end():]
    stripped = line.lstrip()
    return stripped[1:] if stripped.startswith("*") else ""

def hash_comment(line):
    """The text after a # that starts the line or follows white space."""
    m = re.search(r"(^|\s)#(?!!)", line)
    return line[m.end():] if m else ""

def texts(f, lines):
    """(line number, text) of what is doc or comment in file f."""
    if is_doc(f):
        yield from enumerate(lines, 1)
    elif f.endswith(SLASH_COMMENTS):
        for n, line in enumerate(lines, 1):
            yield n, slash_comment(line)
    elif f == "config.toml" or f.endswith(HASH_COMMENTS) or f == ".ci/run":
        docstring = False
        for n, line in enumerate(lines, 1):
            quotes = line.count(chr(34) * 3) + line.count(chr(39) * 3) if f.endswith(".py") else 0
            if docstring or quotes:
                yield n, line
                docstring = docstring != (quotes % 2 == 1)
            else:
                yield n, hash_comment(line)

CANDIDATE = re.compile(r"(?<![\w.:/~$@{<-])([\w.-]+(?:/[\w.-]+)+/?)")
EXAMPLE = re.compile(r"(e\.g\.|for example|example|\blike|such as)[^.;]{0,12}$", re.I)

missing = []
scanned = checked = 0
for f in sorted(files):
    if "node_modules/" in f or (f.startswith("migrations/") and f.endswith(".sql")):
        continue
    try:
        with open(f, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except UnicodeDecodeError:
        continue
    found = list(texts(f, lines))
    if not found:
        continue
    scanned += 1
    package = package_dir(f)
    bases = [b for b in dict.fromkeys([package, package + "/src" if package else "src", os.path.dirname(f)]) if b]
    local = set().union(*(children(b) for b in bases))
    for n, text in found:
        for m in CANDIDATE.finditer(text):
            path = m.group(1).rstrip(".,/")
            after = text[m.end():m.end() + 1]
            if after in ("*", "<", "{") or "..." in path or "/" not in path:
                continue
            first = path.split("/")[0]
            if first not in top and first not in local:
                continue
            if EXAMPLE.search(text[:m.start()]):
                continue
            checked += 1
            if path in present or any(b + "/" + path in present for b in bases) or path in ALLOWED:
                continue
            missing.append(f"{f}:{n}: names {path}, which is not in the repository")

for line in missing:
    print(line)
print(f"check-paths: {checked} paths named in {scanned} files, {len(missing)} missing", file=sys.stderr)
sys.exit(1 if missing else 0)
'
