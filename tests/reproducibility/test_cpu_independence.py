"""The reproducible numeric mode gives the same bits whatever CPU generation the kernels are chosen for.

One machine stands in for many: each run of `probe.py` starts a fresh Python whose environment makes
the numeric libraries pick the code paths of another CPU generation (oneDNN's instruction set, MKL's
instruction set, ATen's vector width, OpenBLAS's kernel). In the mode every run must print the same
weights, losses and metrics to the last bit; without it, the same settings must change them, or the
first test would prove nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rankdml.reproducible import SWITCH, environment

PROBE = Path(__file__).with_name("probe.py")

#: Simulated CPU generations: what each library would pick on another machine.
GENERATIONS = {
    "host": {},
    "oneDNN AVX2 (Haswell-class CPU)": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "oneDNN AVX-512 (Skylake-X-class CPU)": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "MKL AVX2 only": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "ATen AVX-512 asked for": {"ATEN_CPU_CAPABILITY": "avx512"},
    "OpenBLAS SkylakeX kernel asked for": {"OPENBLAS_CORETYPE": "SkylakeX"},
}


def _clean_environment() -> dict[str, str]:
    """This process's environment without any of the mode's variables (the make targets export them)."""
    env = {k: v for k, v in os.environ.items() if k not in environment() and k not in
           ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
    env["TQDM_DISABLE"] = "1"
    return env


def run_probe(settings: dict[str, str], *, mode: bool) -> dict:
    env = {**_clean_environment(), **settings}
    if mode:
        env[SWITCH] = "1"
    args = [sys.executable, str(PROBE)] + ([] if mode else ["--fast"])
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=PROBE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def test_mode_gives_identical_bits_under_every_simulated_generation():
    results = {name: run_probe(settings, mode=True) for name, settings in GENERATIONS.items()}
    reference = results["host"]
    assert reference["mode"] == {"MKL branch": "COMPATIBLE", "ATen kernels": "AVX2", "oneDNN": "off",
                                 "torch threads": "2", "OpenBLAS core": "Haswell"}
    for name, result in results.items():
        assert result == reference, f"{name} differs from the host in the reproducible mode"


@pytest.mark.skipif(not _has_avx512(), reason="the host must offer AVX-512 for AVX2 to be a different code path")
def test_without_the_mode_the_simulated_generations_differ():
    host = run_probe({}, mode=False)
    other = run_probe(GENERATIONS["oneDNN AVX2 (Haswell-class CPU)"], mode=False)
    assert host["mode"]["oneDNN"] == "on"
    assert host["weights"] != other["weights"], "the simulation changed nothing: the first test would be vacuous"
    assert host["losses"] != other["losses"]
