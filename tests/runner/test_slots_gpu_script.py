"""``benchmarks/slots_gpu.sh``, the GPU machine's self-check, as far as a CPU-only host can run it.

The script is run for real where there is no GPU (it must say so in one SKIP line and exit 0,
not fail or hang); the slot spec it builds is parsed by the real ``parse_slots`` with a GPU
list given in place of NVML's (the one stand-in: there is no GPU here to list).
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from flare_eval.runner.slots import Gpu, gpu_inventory, parse_slots

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _script():
    spec = importlib.util.spec_from_file_location("slots_gpu", BENCHMARKS / "slots_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_spec_gives_the_gpu_by_uuid_to_half_the_cores_beside_a_cpu_slot():
    h200 = Gpu(0, "GPU-5f2a9c1e-0000-4000-8000-000000000001", "NVIDIA H200", "570.1")
    spec = _script().gpu_slot_spec(h200.uuid, frozenset(range(16)))
    assert spec == f"{h200.uuid}:0-7,cpu:8-15"
    gpu_slot, cpu_slot = parse_slots(spec, cpus=frozenset(range(16)), gpus=[h200])
    assert gpu_slot.gpu == h200 and gpu_slot.cpuset == "0-7"
    assert cpu_slot.gpu is None and cpu_slot.cpuset == "8-15"
    # an odd core count: both slots alike, the last core unused
    assert _script().gpu_slot_spec(h200.uuid, frozenset({0, 1, 2, 5, 9})) == f"{h200.uuid}:0-1,cpu:2,5"


def test_without_a_gpu_the_script_skips_in_one_line(tmp_path):
    gpus, reason = gpu_inventory()
    if gpus:
        pytest.skip("this host has a GPU: the script runs its checks (sh benchmarks/slots_gpu.sh)")
    done = subprocess.run(["sh", str(BENCHMARKS / "slots_gpu.sh"), str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"SKIP every check: no NVIDIA GPU here ({reason}); run this on a GPU "
                           "machine\n")
    assert not (tmp_path / "work").exists()  # nothing made, nothing removed
