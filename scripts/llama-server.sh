#!/usr/bin/env bash
# Print the path of llama.cpp's llama-server built for this machine's CPU,
# building it once per machine under $TOOLS (about 10 minutes on two cores).
#
# The source is llama.cpp as the llama-cpp-python sdist on PyPI vendors it
# (its whole tree, the server included; pinned by version and SHA-256), so
# it comes through the Python package index like the rest of the voice
# stack. A prebuilt wheel was used before, but its CPU backend was compiled
# for CPUs with AVX-512 and AMX and died with SIGILL on a machine without
# them. This build targets the CPU it runs on, in two variants: AVX2 with
# FMA and F16C (x86-64-v3, most servers since 2015) when /proc/cpuinfo has
# them, else no SIMD beyond the baseline. Each variant has its own directory,
# so a cache shared between machines never hands one a binary it cannot run.
#
# No web UI (the stack runs it with --no-ui), no HTTPS, statically linked.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VERSION=0.3.36 # llama-cpp-python; vendors llama.cpp commit 0c1e570
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

flags=(-DGGML_NATIVE=OFF)
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && grep -qw f16c /proc/cpuinfo; then
    variant=avx2
    flags+=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
else
    variant=generic
    flags+=(-DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF)
fi
built="$TOOLS/llama-server-$VERSION-$variant"
if [ -x "$built/llama-server" ]; then
    echo "$built/llama-server"
    exit 0
fi

# One builder at a time; a second caller waits and finds it built.
exec 8>"$TOOLS/.llama-server.lock"
flock 8
if [ -x "$built/llama-server" ]; then
    echo "$built/llama-server"
    exit 0
fi
command -v cmake >/dev/null && command -v g++ >/dev/null || apt_install cmake g++ make
command -v python3 >/dev/null || die "python3 is needed to download the llama.cpp source"

src="$TOOLS/llama-src"
sdist="$src/llama_cpp_python-$VERSION.tar.gz"
mkdir -p "$src"
if ! echo "$SHA256  $sdist" | sha256sum -c --status 2>/dev/null; then
    log "downloading llama-cpp-python $VERSION's source (llama.cpp inside, 77 MB)"
    rm -f "$sdist"
    python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$src" >&2 \
        || die "pip download llama-cpp-python==$VERSION failed"
    echo "$SHA256  $sdist" | sha256sum -c --status || die "$sdist does not have SHA-256 $SHA256"
fi

work="$built.tmp"
rm -rf "$work" && mkdir -p "$work"
tar xzf "$sdist" -C "$work"
tree="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
log "building llama-server ($variant) from the llama.cpp in llama-cpp-python $VERSION, in $work (about 10 minutes, once)"
cmake -S "$tree" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF "${flags[@]}" > "$work/configure.log" 2>&1 \
    || { tail -n 20 "$work/configure.log" >&2; die "configuring llama.cpp failed (log: $work/configure.log)"; }
cmake --build "$work/build" --target llama-server -j "$(nproc)" > "$work/build.log" 2>&1 \
    || { tail -n 20 "$work/build.log" >&2; die "building llama-server failed (log: $work/build.log)"; }
mkdir -p "$work/out"
cp "$work/build/bin/llama-server" "$work/out/"
rm -rf "$built" && mv "$work/out" "$built"
rm -rf "$work"
echo "$built/llama-server"
