"""Import faiss, or say exactly how to install it.

faiss comes as separate distributions that all install the same ``faiss/`` folder: ``faiss-cpu`` and
``faiss-gpu`` (official CUDA 12 wheels, Linux x86-64; ``faiss-gpu-cu12``/``-cu11`` are the older
community builds). Two of them in one environment overwrite each other's files, and uninstalling
one breaks the other. So rankdml depends on neither by itself; the user picks exactly one:

    pip install "rankdml[cpu]"    # faiss-cpu, any platform
    pip install "rankdml[gpu]"    # faiss-gpu (Linux, NVIDIA driver for CUDA 12)

Only k-means (NMI) and ``backend="faiss"`` of `rankdml.metrics` need it; the k-NN search also has a
torch back-end.
"""
from __future__ import annotations

import functools
from importlib import metadata
from types import ModuleType

#: Every distribution on PyPI that installs the `faiss` module.
DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11")
#: The fix, as commands (the extras rankdml[cpu] / rankdml[gpu] add exactly these packages).
CPU_INSTALL = "pip install faiss-cpu"
GPU_INSTALL = "pip install faiss-gpu"
INSTALL_HINT = f"`{CPU_INSTALL}` (or `{GPU_INSTALL}` on Linux with an NVIDIA driver for CUDA 12)"


class FaissInstallError(ImportError):
    """faiss is missing, installed twice, or broken; the message names the command that fixes it."""


def installed_distributions() -> list[str]:
    """Names of the faiss distributions installed in this environment, as 'name==version'."""
    found = []
    for name in DISTRIBUTIONS:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return found


@functools.lru_cache(maxsize=1)
def import_faiss() -> ModuleType:
    """The `faiss` module, after checking that exactly one faiss build provides it.

    Raises FaissInstallError (an ImportError) naming the fix when faiss is missing, when several
    faiss distributions are installed, when the installed one fails to import, or when `faiss` is
    some other module.
    """
    found = installed_distributions()
    if len(found) > 1:
        names = " ".join(f.split("==")[0] for f in found)
        raise FaissInstallError(
            f"several faiss builds are installed ({', '.join(found)}); they share one faiss/ folder and overwrite "
            f"each other. Keep exactly one: `pip uninstall -y {names}`, then {INSTALL_HINT}")
    try:
        import faiss
    except ImportError as err:
        if not found:
            raise FaissInstallError(
                f"faiss is not installed; rankdml needs it for k-means (NMI) and backend='faiss'. Install one "
                f"build: {INSTALL_HINT}. Or skip NMI: retrieval_metrics(..., nmi=False).") from err
        name = found[0].split("==")[0]
        cpu_instead = (f"; without a CUDA 12 driver use the CPU build: `pip uninstall -y {name}`, then `{CPU_INSTALL}`"
                       if name != "faiss-cpu" else "")
        raise FaissInstallError(f"{found[0]} is installed but `import faiss` fails ({err}). Reinstall it: "
                                f"`pip install --force-reinstall {found[0]}`{cpu_instead}") from err
    if not (hasattr(faiss, "IndexFlatL2") and hasattr(faiss, "Kmeans")):
        raise FaissInstallError(
            f"the module `faiss` at {getattr(faiss, '__file__', '?')} is not the faiss library (no IndexFlatL2 / "
            f"Kmeans); remove it and install one faiss build: {INSTALL_HINT}")
    return faiss
