"""The slots of a cluster: CPU models read per core, and every team's cases placed on slots of
one identity (CPU model, core count, GPU model), by hand-worked examples."""

from __future__ import annotations

import pytest

from flare_eval.errors import ConfigError
from flare_eval.runner.slot_workers import SlotWorker, cpu_model, place_teams
from flare_eval.runner.slots import Gpu, Slot

CPUINFO = """processor\t: 0
model name\t: Intel(R) Core(TM) i9 P-core

processor\t: 1
model name\t: Intel(R) Core(TM) i9 P-core

processor\t: 2
model name\t: Intel(R) Core(TM) i9 E-core
"""


def _worker(name: str, cores: set[int], *, model: str = "EPYC", gpu: str | None = None) -> SlotWorker:
    return SlotWorker(f"tcp://10.0.0.1:{9000 + len(name)}{name[-1]}", "h",
                      Slot(name, frozenset(cores), None if gpu is None else Gpu(0, f"GPU-{name}", gpu)),
                      model)


def test_the_cpu_model_is_read_per_core():
    assert cpu_model(frozenset({0, 1}), cpuinfo=CPUINFO) == "Intel(R) Core(TM) i9 P-core"
    # a slot across both kinds of core names both
    assert cpu_model(frozenset({1, 2}), cpuinfo=CPUINFO) == (
        "Intel(R) Core(TM) i9 E-core + Intel(R) Core(TM) i9 P-core")


def test_alike_slots_differ_in_nothing_that_times_a_case():
    a = _worker("a", {0, 1}, gpu="NVIDIA H200")
    assert a.identity == ("EPYC", 2, "NVIDIA H200")
    # another host, other cores, another GPU of the same model: alike
    assert _worker("b", {6, 7}, gpu="NVIDIA H200").identity == a.identity
    for other in (_worker("c", {0, 1, 2}, gpu="NVIDIA H200"), _worker("d", {0, 1}, gpu="NVIDIA A100"),
                  _worker("e", {0, 1}, model="Xeon", gpu="NVIDIA H200"), _worker("f", {0, 1})):
        assert other.identity != a.identity


def test_each_team_goes_to_one_identity_the_least_loaded_per_slot():
    # identity H: h0, h1, h2 (3 slots); identity A: a0 (1 slot)
    workers = [_worker(n, {0}, gpu="H200") for n in ("h0", "h1", "h2")] + [_worker("a0", {0}, gpu="A100")]
    placed = place_teams([("t1", 6), ("t2", 6), ("t3", 1), ("t4", 4)], workers, ran_on={})
    # by hand, work per slot before each team: t1 H 0/3, A 0/1 -> tie, more slots: H (6/3 = 2);
    # t2: H 2, A 0 -> A (6); t3: H 2, A 6 -> H (7/3); t4: H 2.33, A 6 -> H
    assert {t: {w.slot.name for w in ws} for t, ws in placed.items()} == {
        "t1": {"h0", "h1", "h2"}, "t2": {"a0"}, "t3": {"h0", "h1", "h2"}, "t4": {"h0", "h1", "h2"}}


def test_a_resumed_team_keeps_the_identity_it_ran_on():
    workers = [_worker("h0", {0}, gpu="H200"), _worker("a0", {0}, gpu="A100")]
    # t1 would go to either (tie: same slot count, then by identity: A100 < H200), but it ran on h0
    assert [w.slot.name for w in place_teams([("t1", 2)], workers, ran_on={})["t1"]] == ["a0"]
    placed = place_teams([("t1", 2)], workers, ran_on={"t1": {"h0"}})
    assert [w.slot.name for w in placed["t1"]] == ["h0"]
    # a worker of that identity gone, another of it left: still that identity
    placed = place_teams([("t1", 2)], workers, ran_on={"t1": {"h0", "h9"}})
    assert [w.slot.name for w in placed["t1"]] == ["h0"]


def test_a_team_whose_slots_are_gone_or_mixed_is_refused():
    workers = [_worker("h0", {0}, gpu="H200"), _worker("a0", {0}, gpu="A100")]
    with pytest.raises(ConfigError, match=r"team t1: its finished cases ran on slots \['h9'\], none "
                       r"of which is in the cluster now \(slots: \['a0', 'h0'\]\)"):
        place_teams([("t1", 2)], workers, ran_on={"t1": {"h9"}})
    with pytest.raises(ConfigError, match=r"team t1: its finished cases ran on slots of different "
                       r"hardware \(\['a0', 'h0'\]\)"):
        place_teams([("t1", 2)], workers, ran_on={"t1": {"h0", "a0"}})
