"""``fastretrieve doctor``: what this installation runs on, for bug reports and GPU set-up."""

from __future__ import annotations

import ctypes
import json
import platform
import sys

from .. import __version__, capabilities
from ..embed.download import cache_dir

EXAMPLES = """\
examples:
  fastretrieve doctor
  fastretrieve doctor --format json     # attach this to a bug report
"""

# The shared libraries ONNX Runtime's CUDA provider needs, newest version first.
CUDA_LIBRARIES = {
    "linux": {
        "cudart": ("libcudart.so.12", "libcudart.so.11.0"),
        "cublas": ("libcublas.so.12", "libcublas.so.11"),
        "cudnn": ("libcudnn.so.9", "libcudnn.so.8"),
    },
    "win32": {
        "cudart": ("cudart64_12.dll", "cudart64_110.dll"),
        "cublas": ("cublas64_12.dll", "cublas64_11.dll"),
        "cudnn": ("cudnn64_9.dll", "cudnn64_8.dll"),
    },
}


def loadable_cuda_libraries() -> dict[str, str | None]:
    """For each CUDA library ONNX Runtime needs, the name that loads here, or None."""
    found = {}
    for library, names in CUDA_LIBRARIES.get(sys.platform, {}).items():
        found[library] = None
        for name in names:
            try:
                ctypes.CDLL(name)
            except OSError:
                continue
            found[library] = name
            break
    return found


def diagnose() -> dict:
    """Versions, search backend, CPU features, ONNX Runtime and CUDA, cache location."""
    report = {
        "fastretrieve": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    report.update(capabilities())
    try:
        import onnxruntime

        report["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        report["onnxruntime"] = None
    report["cuda_libraries"] = loadable_cuda_libraries()
    report["cache_dir"] = str(cache_dir())
    return report


def add_parser(add_command) -> None:
    """Register the ``doctor`` command."""
    parser = add_command(
        "doctor", help="show the backend, CPU features, ONNX Runtime and CUDA",
        description="Report the search backend and SIMD level, the CPU features, ONNX Runtime's "
        "version and execution providers, whether the CUDA libraries load, and the model cache.",
        epilog=EXAMPLES,
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Run ``fastretrieve doctor``."""
    report = diagnose()
    if args.format == "json":
        print(json.dumps(report, indent=2))
        return 0
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {_readable(value)}")
    return 0


def _readable(value) -> str:
    if isinstance(value, dict):
        if all(isinstance(v, bool) for v in value.values()):
            return ", ".join(name for name, present in value.items() if present) or "none"
        return ", ".join(f"{name}={'not found' if v is None else v}" for name, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)
