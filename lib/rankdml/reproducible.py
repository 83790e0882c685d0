"""The reproducible numeric mode: the same training numbers on every x86-64 CPU with AVX2.

Float results depend on which kernels run: MKL and oneDNN pick code paths by CPU generation, ATen
picks a vector width, and reductions split differently over a different number of threads. The
mode pins each of these (see `environment()`); it is what the book's stored outputs are produced and
checked with (`make notebooks`, `make test`, nbval, sweeps).

Some settings are read only once, when the library they govern first initialises, so they must be
in the environment before torch does its first computation: `make` exports them for every
command, `environment()` gives them for a subprocess, and `enable()` sets them for the running
process (and refuses, with the reason, when it is too late).
"""
from __future__ import annotations

import os

#: Threads used in the mode: float sums depend on how work is split between threads.
THREADS = 2


def environment(threads: int = THREADS) -> dict[str, str]:
    """The environment variables of the mode, to export before Python (or a kernel) starts."""
    n = str(threads)
    return {
        "RANKDML_REPRODUCIBLE": "1",
        "MKL_CBWR": "AVX2,STRICT",        # MKL: the AVX2 code path on every CPU, bitwise-stable results
        "ATEN_CPU_CAPABILITY": "avx2",    # ATen: AVX2 vector kernels, not AVX-512, whatever the CPU
        "ONEDNN_MAX_CPU_ISA": "AVX2",     # oneDNN: belt and braces (the mode also switches it off)
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
    }


def is_enabled() -> bool:
    """True when the mode's environment is in force in this process."""
    return all(os.environ.get(k) == v for k, v in environment().items() if not k.endswith("NUM_THREADS"))
