#!/usr/bin/env bash
# Fuzz the fast path's decisions under ASan + UBSan (see fuzz.py):
#
#   tools/fuzz/run.sh rx|tx|neigh [libFuzzer options]      e.g. -max_total_time=3600 -jobs=1
#
# Builds (incrementally) a copy of vxtun's fastpath extensions and fuzz_decide.pyx with clang
# -fsanitize=address,undefined,fuzzer-no-link in tools/fuzz/build/ (the in-place gcc build of
# the worktree is untouched), then runs atheris with the ASan runtime preloaded (it holds the
# UBSan handlers too).  The corpus grows in tools/fuzz/build/corpus-TARGET; crashes are
# written to tools/fuzz/build/crash-*.  Exits non-zero on any crash.
# Needs: clang, libclang-rt-14-dev (or newer), atheris (pip), Cython.
set -euo pipefail
target=${1:?usage: tools/fuzz/run.sh rx|tx|neigh [libFuzzer options]}
shift
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
B=$here/build
PY=${PYTHON:-python3}
mkdir -p "$B/src" "$B/corpus-$target"

export CC=clang CXX=clang++ LDSHARED="clang -shared"
export CFLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -g"
# the copy: sources only (never the worktree's gcc-built .so files); mtimes kept, so a rebuild
# recompiles only what changed
tar -C "$root" -cf - --exclude='*.so' --exclude='*.c' --exclude='*.html' \
    --exclude=__pycache__ vxtun setup.py | tar -C "$B/src" -xf -
(cd "$B/src" && "$PY" setup.py -q build_ext --inplace >"$B/build.log" 2>&1) ||
    { cat "$B/build.log" >&2; echo "tools/fuzz: the sanitized build failed" >&2; exit 1; }
cp -p "$here/fuzz_decide.pyx" "$here/setup_fuzz.py" "$B/"
(cd "$B" && "$PY" setup_fuzz.py "$B/src" -q build_ext --inplace >>"$B/build.log" 2>&1) ||
    { cat "$B/build.log" >&2; echo "tools/fuzz: building fuzz_decide failed" >&2; exit 1; }

[ -n "$(ls -A "$B/corpus-$target")" ] || PYTHONPATH=$B/src "$PY" "$here/fuzz.py" seeds "$B/corpus-$target"
asan=$("$PY" -c 'import atheris, os; print(os.path.join(atheris.path(), "asan_with_fuzzer.so"))')
cd "$B"
# detect_leaks=0: CPython keeps its objects to the end; PYTHONMALLOC=malloc: every object a
# malloc of its own, so ASan sees overruns that pymalloc's arenas would hide
LD_PRELOAD=$asan PYTHONMALLOC=malloc PYTHONPATH="$B/src:$B:$here" \
    ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:handle_abort=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$PY" "$here/fuzz.py" "$target" -artifact_prefix="$B/crash-$target-" "$@" "$B/corpus-$target"
