"""The benchmarks' interleaved timing: every loop once per turn, in the order asked for, with its CPU time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import host, interleaved  # noqa: E402


def _arms(log: list):
    return {name: (lambda name=name: log.append(name)) for name in "abcde"}


def test_alternate_reverses_every_other_turn():
    log: list = []
    times = interleaved(_arms(log), 4, 1)
    assert log[:5] == list("abcde")  # the warm-up steps, in order
    assert log[5:] == list("abcde") + list("edcba") + list("abcde") + list("edcba")
    assert {k: len(v) for k, v in times.items()} == dict.fromkeys("abcde", 4)


def test_shuffled_runs_each_loop_once_per_turn_in_varying_orders():
    log: list = []
    cpu: dict = {}
    interleaved(_arms(log), 40, 0, order="shuffled", cpu=cpu)
    turns = [tuple(log[i : i + 5]) for i in range(0, len(log), 5)]
    assert all(sorted(t) == list("abcde") for t in turns)
    assert len(set(turns)) > 20  # drawn afresh: 120 orders to draw from
    # no loop is always first or last (under "alternate" a and e take those places at every turn)
    assert len({t[0] for t in turns}) == 5 and len({t[-1] for t in turns}) == 5
    # seeded: every rank of a distributed benchmark draws the same orders
    again: list = []
    interleaved(_arms(again), 40, 0, order="shuffled")
    assert again == log
    assert {k: len(v) for k, v in cpu.items()} == dict.fromkeys("abcde", 40)
    assert all(u >= 0 and s >= 0 for v in cpu.values() for u, s in v)


def test_an_unknown_order_is_refused():
    with pytest.raises(ValueError, match="neither"):
        interleaved(_arms([]), 1, 0, order="random")


def test_another_seed_draws_other_orders():
    first: list = []
    second: list = []
    interleaved(_arms(first), 20, 0, order="shuffled", seed=0)
    interleaved(_arms(second), 20, 0, order="shuffled", seed=1)
    assert sorted(first) == sorted(second) and first != second


def test_host_names_the_cpu_and_its_count():
    import os

    name, count = host().rsplit(", ", 1)
    assert name and count == f"{os.cpu_count()} CPUs"
