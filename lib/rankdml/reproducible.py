"""The reproducible numeric mode: bit-identical CPU training on every x86-64 CPU with AVX2.

Float results depend on which kernels run, and each numeric library picks its kernels by CPU:

- oneDNN (convolutions) has one code path per instruction set (AVX2, AVX-512, AMX): the mode
  switches it off (`torch.backends.mkldnn.enabled = False`), so convolutions run as ATen's
  im2col + GEMM;
- MKL (every float GEMM, so linear layers and those convolutions) picks a branch per CPU. Its
  conditional numerical reproducibility (CNR) pins one: `MKL_CBWR=COMPATIBLE`, the only branch MKL
  accepts on both Intel and AMD processors (on this AMD EPYC it refuses `AVX2` and `AVX512` with
  "unsupported branch" and silently stays on its automatic choice);
- ATen's element-wise and reduction kernels come in AVX2 and AVX-512 builds:
  `ATEN_CPU_CAPABILITY=avx2`;
- OpenBLAS inside faiss (k-means for NMI) picks a kernel per CPU: `OPENBLAS_CORETYPE=Haswell`;
- float sums split differently over a different number of threads: 2 threads for torch, MKL,
  OpenMP, OpenBLAS and faiss, whatever the machine has.

MKL and ATen read their settings once, at their first computation, so the variables must be in
the environment before torch computes anything. `make` exports `RANKDML_REPRODUCIBLE=1`, and
`import rankdml` then puts the rest into the environment before it imports torch; `enable()` (called
by `rankdml.seed_everything`) does the same for a process that is already running and checks that
every setting took effect, warning with the fix when it is too late.

Guaranteed: the same bytes on x86-64 CPUs with AVX2, with the pinned wheels of requirements.txt.
Not guaranteed: other CPU families (ARM, x86 without AVX2), GPUs, other versions of torch, MKL,
faiss or OpenBLAS; there, `make check-reproduction` compares the metrics within tolerances.
"""
from __future__ import annotations

import ctypes
import os
import sys
import warnings
from typing import Any

#: Threads used in the mode: float sums depend on how work is split between threads.
THREADS = 2

#: The switch `make` exports; `import rankdml` applies the environment when it is "1".
SWITCH = "RANKDML_REPRODUCIBLE"

# MKL's CNR constants (mkl_service.h): the branch query, and the COMPATIBLE branch.
_MKL_CBWR_BRANCH, _MKL_CBWR_COMPATIBLE = 1, 3


def environment(threads: int = THREADS) -> dict[str, str]:
    """The environment variables of the mode, to export before Python (or a Jupyter kernel) starts."""
    n = str(int(threads))
    return {
        SWITCH: "1",
        "MKL_CBWR": "COMPATIBLE",
        "ATEN_CPU_CAPABILITY": "avx2",
        "OPENBLAS_CORETYPE": "Haswell",
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
    }


def requested() -> bool:
    """True when the environment asks for the mode (`RANKDML_REPRODUCIBLE=1`)."""
    return os.environ.get(SWITCH, "") == "1"


def apply_environment(threads: int = THREADS) -> None:
    """Put the mode's variables into `os.environ` (overriding other values: they would break it)."""
    os.environ.update(environment(threads))


def _mkl():
    """The MKL service functions exported by torch's CPU library, or None where torch has no MKL."""
    import torch

    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        lib = ctypes.CDLL(path)
        get, set_ = lib.mkl_serv_cbwr_get, lib.mkl_serv_cbwr_set
    except (OSError, AttributeError):
        return None
    get.argtypes = set_.argtypes = [ctypes.c_int]
    get.restype = set_.restype = ctypes.c_int
    return get, set_


def mkl_branch() -> str:
    """MKL's code branch in force: "COMPATIBLE", "AUTO", "unset" (MKL not initialised) or "no MKL"."""
    mkl = _mkl()
    if mkl is None:
        return "no MKL"
    return {1: "unset", 2: "AUTO", _MKL_CBWR_COMPATIBLE: "COMPATIBLE"}.get(mkl[0](_MKL_CBWR_BRANCH),
                                                                          str(mkl[0](_MKL_CBWR_BRANCH)))


def enable(threads: int = THREADS) -> None:
    """Turn the mode on in this process; warn, saying how to fix it, where a setting came too late.

    Safe to call more than once. On a CUDA device it changes nothing the GPU computes.
    """
    import torch

    apply_environment(threads)
    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(threads)
    problems = []
    mkl = _mkl()
    if mkl is not None and mkl[0](_MKL_CBWR_BRANCH) != _MKL_CBWR_COMPATIBLE:
        code = mkl[1](_MKL_CBWR_COMPATIBLE)  # works until MKL's first computation
        if code != 0:
            problems.append(f"MKL already computed on its automatic branch (mkl_cbwr_set returned {code})")
    capability = torch.backends.cpu.get_cpu_capability()  # fixed by ATen's first kernel call
    if capability != "AVX2":
        problems.append(f"ATen runs {capability} kernels, not AVX2")
    if "faiss" in sys.modules and os.environ.get("OPENBLAS_CORETYPE") != "Haswell":
        problems.append("faiss (OpenBLAS) was loaded before the mode")
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(threads)
    if problems:
        warnings.warn("the reproducible numeric mode is incomplete: " + "; ".join(problems) + ". Results may "
                      f"differ in the last digits from the book's stored outputs. Start Python or the Jupyter "
                      f"kernel with {SWITCH}=1 in the environment (e.g. `{SWITCH}=1 jupyter lab`), or restart "
                      "the kernel and call rankdml.seed_everything(...) before any computation.",
                      RuntimeWarning, stacklevel=2)


def status() -> dict[str, str]:
    """What is in force now, for a chapter to print: MKL branch, ATen kernels, oneDNN, threads."""
    import torch

    return {"MKL branch": mkl_branch(), "ATen kernels": torch.backends.cpu.get_cpu_capability(),
            "oneDNN": "on" if torch.backends.mkldnn.enabled else "off", "torch threads": str(torch.get_num_threads()),
            "OpenBLAS core": os.environ.get("OPENBLAS_CORETYPE", "auto")}


def bitwise_platform(device: Any = "cpu") -> bool:
    """True where the mode promises the stored bytes: the CPU of an x86-64 machine with AVX2, mode on."""
    import platform

    import torch

    if torch.device(device).type != "cpu" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return (mkl_branch() == "COMPATIBLE" and torch.backends.cpu.get_cpu_capability() == "AVX2"
            and not torch.backends.mkldnn.enabled)
