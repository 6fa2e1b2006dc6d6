#!/usr/bin/env bash
# Builds fastretrieve's extension with AddressSanitizer + UndefinedBehaviorSanitizer in a
# throwaway virtual environment and runs the kernel tests under it.
#
#     bash tests/run_sanitized.sh
#
# The sanitizer runtimes are preloaded because the Python interpreter itself is not
# instrumented. Leak checking is off: CPython keeps many allocations alive until exit.
# Any ASan report or UBSan finding aborts the run with a non-zero exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TMPDIR:-/tmp}/fastretrieve-sanitize-venv"

python3 -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
FASTRETRIEVE_SANITIZE=ON "$venv/bin/pip" install --quiet "$root[test]"

cd "$root"
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" \
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
FASTRETRIEVE_BACKEND=cpp \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_search_oracle.py tests/test_search_api.py tests/test_search_concurrency.py \
    tests/test_search_lowprec.py tests/test_search_far_from_origin.py tests/test_range_search.py \
    tests/test_dispatch.py -k "cpp or not numba and not numpy" "$@"
