#!/usr/bin/env bash
# Builds the C++ kernels with ThreadSanitizer into a standalone program (no Python, whose
# uninstrumented interpreter would hide or fake races) and runs the thread pool and
# concurrent-search checks of tests/tsan/concurrent_search.cpp under it, at the default SIMD
# level (FASTRETRIEVE_SIMD chooses another). A reported race fails the run.
#
#     bash tests/run_tsan.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${TMPDIR:-/tmp}/fastretrieve-tsan"
mkdir -p "$build"
cxx="${CXX:-g++}"
flags=(-std=c++17 -O1 -g -fsanitize=thread -fno-omit-frame-pointer -pthread -I"$root/csrc")

sources=(knn.cpp bf16_screen.cpp screen_bound.cpp dispatch.cpp parallel.cpp kernels/scalar.cpp)
objects=()
compile() {  # source, extra flags...
    local source="$1"; shift
    local object="$build/$(echo "$source" | tr / _).o"
    "$cxx" "${flags[@]}" "$@" -c "$root/csrc/$source" -o "$object" &
    objects+=("$object")
}
case "$(uname -m)" in
    x86_64|amd64)
        flags+=(-DFASTRETRIEVE_X86_KERNELS=1)
        compile kernels/avx2.cpp -mavx2 -mfma -mf16c
        compile kernels/avx512.cpp -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -mf16c
        compile kernels/avx512_bf16.cpp -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 \
            -mavx2 -mfma -mf16c
        ;;
esac
for source in "${sources[@]}"; do
    compile "$source"
done
wait
"$cxx" "${flags[@]}" "$root/tests/tsan/concurrent_search.cpp" "${objects[@]}" \
    -o "$build/concurrent_search"

# The pool and the search driver are the same at every SIMD level (the per-ISA kernels
# have no threads of their own), so one level -- the default -- keeps the run short.
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "$build/concurrent_search"
