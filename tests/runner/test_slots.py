"""Slots without an engine: the ``--slots`` forms and their refusals, the queue over slots, and
the per-case record of where a case ran (a scripted backend and a fake NVML)."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from flare_eval.errors import ConfigError
from flare_eval.runner import run_submission
from flare_eval.runner.pool import Job, run_on_slots, schedule
from flare_eval.runner.slots import Gpu, Slot, parse_slots
from tests.runner.test_run import ScriptedBackend

pytest.importorskip("psutil")  # the sampler

TWO_GPUS = [Gpu(0, "GPU-aaaa", "H100", "550.1"), Gpu(1, "GPU-bbbb", "H100", "550.1")]


def _cpusets(slots: list[Slot]) -> list[str]:
    return [s.cpuset for s in slots]


def test_n_splits_the_cores_evenly_and_leaves_the_remainder_unused():
    # 5 cores into 2 slots: 5 // 2 = 2 cores each, in core order; core 4 would make one
    # slot bigger than the other, so it stays unused
    slots = parse_slots("2", cpus=frozenset(range(5)), gpus=[])
    assert _cpusets(slots) == ["0-1", "2-3"]
    assert [s.name for s in slots] == ["0", "1"] and all(s.gpu is None for s in slots)
    assert all(s.pinned for s in slots)


def test_n_gives_slot_k_gpu_k_where_there_are_gpus():
    slots = parse_slots("2", cpus=frozenset(range(8)), gpus=TWO_GPUS)
    assert [(s.cpuset, s.gpu.uuid) for s in slots] == [("0-3", "GPU-aaaa"), ("4-7", "GPU-bbbb")]
    with pytest.raises(ConfigError, match=r"--slots 3: 3 slots but this host has 2 GPU\(s\)"):
        parse_slots("3", cpus=frozenset(range(8)), gpus=TWO_GPUS)


def test_explicit_slots_by_index_uuid_and_cpu_with_extra_core_ranges():
    slots = parse_slots("0:0-3,8-11,GPU-bbbb:4-7,cpu:12", cpus=frozenset(range(16)),
                        gpus=TWO_GPUS)
    assert _cpusets(slots) == ["0-3,8-11", "4-7", "12"]
    assert [s.gpu and s.gpu.index for s in slots] == [0, 1, None]
    assert slots[0].describe() == {"name": "0", "cpuset": "0-3,8-11", "pinned": True,
                                   "gpu_index": 0, "gpu_uuid": "GPU-aaaa"}


def test_auto_makes_one_slot_per_nvml_gpu_with_its_uuid_name_and_driver(FakeNVML):
    nvml = FakeNVML(n_gpus=2)
    slots = parse_slots("auto", cpus=frozenset(range(4)), nvml=nvml)
    assert _cpusets(slots) == ["0-1", "2-3"]
    # the fake's name comes as bytes, as from older bindings
    assert [slots[1].gpu] == [Gpu(1, "GPU-fake-1", "Fake GPU", "550.54.15")]
    assert nvml.shutdown


@pytest.mark.parametrize("spec, message", [
    ("auto", r"--slots auto: makes one slot per GPU, but this host has none"),
    ("3", r"--slots 3: 3 slots but this process may use only 2 core\(s\) \(0-1\)"),
    ("0", r"--slots 0: expected 1 or more slots, got 0"),
    ("cpu:0-1,cpu:1", r"--slots cpu:0-1,cpu:1: slot 1 \(cpu:1\) shares core\(s\) 1 with slot 0"),
    ("cpu:0,cpu:5", r"slot 1 \(cpu:5\): core\(s\) 5 not on this host \(this process may use 0-1\)"),
    ("cpu:1-0", r"slot 0 \(cpu:1-0\): the range 1-0 runs backwards"),
    ("cpu:x", r"slot 0 \(cpu:x\): expected a core or a range A-B of cores, found 'x'"),
    ("0-1", r"--slots 0-1: expected N, auto or GPU:CORES items, found '0-1'"),
    ("0:0", r"slot 0 \(0:0\): no GPU '0' on this host \(NVML: no GPU was given\)"),
    ("cpu:0,cpu:0,1", r"slot 1 \(cpu:0,1\) shares core\(s\) 0 with slot 0"),
])
def test_bad_slots_name_the_slot_and_what_is_wrong(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_slots(spec, cpus=frozenset({0, 1}), gpus=[])


def test_a_gpu_in_two_slots_is_refused():
    with pytest.raises(ConfigError, match=r"slot 1 \(GPU-aaaa:1\): GPU GPU-aaaa is slot 0's"):
        parse_slots("0:0,GPU-aaaa:1", cpus=frozenset({0, 1}), gpus=TWO_GPUS)


def test_interleaving_takes_one_job_of_each_team_in_turn():
    def noop(slot, sampler):
        return "ok"

    teams = [[Job("a", c, noop) for c in "123"], [Job("b", "1", noop)],
             [Job("c", c, noop) for c in "12"]]
    names = [f"{j.team}{j.label}" for j in schedule(teams, interleave=True)]
    assert names == ["a1", "b1", "c1", "a2", "c2", "a3"]
    assert [f"{j.team}{j.label}" for j in schedule(teams)] == [
        "a1", "a2", "a3", "b1", "c1", "c2"]


def _slots(n: int) -> list[Slot]:
    # unpinned, so the sampler reads host-wide CPU times (no core of this host is assumed)
    return [Slot(str(k), frozenset({0}), pinned=False) for k in range(n)]


def test_each_slot_runs_one_job_at_a_time_and_every_job_runs_once():
    busy: dict[str, int] = {}
    ran: list[tuple[str, str]] = []
    most = {"together": 0}
    lock = threading.Lock()

    def job(label: str) -> Job:
        def run(slot, sampler):
            with lock:
                busy[slot.name] = busy.get(slot.name, 0) + 1
                assert busy[slot.name] == 1, f"slot {slot.name} runs two jobs"
                most["together"] = max(most["together"], sum(busy.values()))
            time.sleep(0.05)
            with lock:
                busy[slot.name] -= 1
                ran.append((label, slot.name))
            return "ok"
        return Job("t", label, run)

    done: list[str] = []
    run_on_slots([job(str(k)) for k in range(9)], _slots(3), period_s=0.1,
                 advance=lambda n, text: done.append(text))
    assert sorted(label for label, _ in ran) == [str(k) for k in range(9)]
    assert most["together"] == 3  # 9 jobs of 50 ms on 3 slots overlap
    assert {slot for _, slot in ran} == {"0", "1", "2"}
    assert sorted(done) == sorted(f"{k}: ok" for k in range(9))


def test_a_failing_job_stops_the_queue_and_is_raised_after_the_others_finish():
    finished: list[str] = []

    def run(label: str, fail: bool):
        def go(slot, sampler):
            time.sleep(0.2 if not fail else 0.05)
            if fail:
                raise OSError(28, "No space left on device")
            finished.append(label)
            return "ok"
        return Job("t", label, go)

    jobs = [run("slow", False), run("boom", True), *(run(f"later{k}", False) for k in range(5))]
    with pytest.raises(OSError, match="No space left"):
        run_on_slots(jobs, _slots(2), period_s=0.1)
    # 'slow' was in flight beside the failure and is finished; nothing new was started after it
    assert finished == ["slow"]


def test_run_submission_on_two_gpu_slots_records_where_each_case_ran(tmp_path, make_inputs,
                                                                     submission, FakeNVML):
    cases = [f"ok{k}" for k in range(6)]
    inputs = make_inputs(cases)
    nvml = FakeNVML(n_gpus=2)
    gpus = [Gpu(0, "GPU-fake-0", "Fake GPU", "550.54.15"),
            Gpu(1, "GPU-fake-1", "Fake GPU", "550.54.15")]
    slots = [Slot("0", frozenset({0}), gpus[0], pinned=False),
             Slot("1", frozenset({0}), gpus[1], pinned=False)]
    backend = ScriptedBackend(submission)
    records = run_submission(backend, inputs, tmp_path / "out", team="t", slots=slots,
                             nvml=nvml, progress=False)
    assert [r["case"] for r in records] == cases and sorted(backend.ran) == cases
    runs = pd.read_csv(tmp_path / "out" / "t" / "runs.csv", dtype=str)
    # each case records its own slot's GPU, never the other one's
    for row in runs.itertuples():
        assert row.gpu_uuid == f"GPU-fake-{row.slot}" and row.gpu_index == row.slot
        assert row.gpu_name == "Fake GPU" and row.gpu_driver == "550.54.15"
    assert set(runs["slot"]) <= {"0", "1"} and runs["host"].nunique() == 1
    # each slot's sampler opened its own GPU, and only those, by UUID as the engine is given
    # it (an index names another GPU once the enumeration order differs)
    assert sorted(set(nvml.handles)) == ["uuid handle0", "uuid handle1"]

    # resumed: nothing runs again, no case is recorded twice
    again = ScriptedBackend(submission)
    run_submission(again, inputs, tmp_path / "out", team="t", slots=slots, nvml=nvml,
                   progress=False)
    assert again.ran == [] and len(pd.read_csv(tmp_path / "out" / "t" / "runs.csv")) == 6


def test_gpu_index_and_slots_together_are_refused(tmp_path, make_inputs, submission):
    with pytest.raises(ConfigError, match=r"--gpu 0 and --slots: give each slot's GPU in --slots"):
        run_submission(ScriptedBackend(submission), make_inputs(["ok1"]), tmp_path, team="t",
                       gpu_index=0, slots=_slots(1), progress=False)


def test_a_resumed_run_on_other_slots_is_refused(tmp_path, make_inputs, submission):
    inputs = make_inputs(["ok1"])
    run_submission(ScriptedBackend(submission), inputs, tmp_path, team="t", slots=_slots(1),
                   progress=False)
    with pytest.raises(ConfigError, match=r"other settings \(slots"):
        run_submission(ScriptedBackend(submission), inputs, tmp_path, team="t",
                       slots=_slots(2), progress=False)
