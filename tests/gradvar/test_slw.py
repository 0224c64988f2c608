"""SLW schedules against DeepSpeed's own CurriculumScheduler (deepspeed >= 0.19, installed by the test extra)."""

import itertools

import pytest
import torch

from gradvar.slw import SLWSchedule, deepspeed_curriculum, truncate

scheduler = pytest.importorskip("deepspeed.runtime.data_pipeline.curriculum_scheduler")


def deepspeed_lengths(block, steps):
    """DeepSpeed's stateful scheduler, stepped as its engine does: update_difficulty(global_steps + 1)."""
    ref = scheduler.CurriculumScheduler(block)
    return [ref.update_difficulty(t) for t in range(1, steps + 1)]


def grid():
    for kind, lo, hi, step, total, degree in itertools.product(
        ("fixed_linear", "fixed_root"), (1, 8, 10, 12, 13, 64), (100, 128, 512), (1, 8, 16), (1, 7, 50, 97), (1, 2, 3)
    ):
        if kind == "fixed_linear" and degree != 1:
            continue
        cfg = {"total_curriculum_step": total, "difficulty_step": step}
        if kind == "fixed_root":
            cfg["root_degree"] = degree
        yield {"min_difficulty": lo, "max_difficulty": hi, "schedule_type": kind, "schedule_config": cfg}


DISCRETE = [
    ([8, 32, 128], [5, 10], 8, 128),
    ([16, 64, 128], [4, 8], 8, 128),
    ([8, 128, 64], [3, 6], 8, 128),  # reaches max, then DeepSpeed stays there
    ([8, 64, 32], [3, 6], 8, 128),  # never reaches max: follows the list
    ([32, 16], [2], 8, 128),
    ([8, 16, 24], [10, 5], 8, 24),  # max_step not increasing
    ([64, 8, 256], [1, 4], 64, 64),
]  # start at max_difficulty: DeepSpeed never updates


@pytest.mark.parametrize("kind", ["fixed_linear", "fixed_root"])
def test_linear_and_root_equal_deepspeed(kind):
    """min not a multiple of the step, step 1/8/16, root degrees 1-3, one-step and odd totals (864 in all)."""
    for block in (b for b in grid() if b["schedule_type"] == kind):
        steps = int(block["schedule_config"]["total_curriculum_step"] * 1.3) + 3
        ours = SLWSchedule.from_deepspeed(block)
        assert [ours.seqlen(t) for t in range(1, steps + 1)] == deepspeed_lengths(block, steps), block


@pytest.mark.parametrize("difficulty,max_step,lo,hi", DISCRETE)
def test_discrete_equals_deepspeed(difficulty, max_step, lo, hi):
    block = {
        "min_difficulty": lo,
        "max_difficulty": hi,
        "schedule_type": "fixed_discrete",
        "schedule_config": {"difficulty": difficulty, "max_step": max_step},
    }
    ours = SLWSchedule.from_deepspeed(block)
    assert [ours.seqlen(t) for t in range(1, 20)] == deepspeed_lengths(block, 19)


def test_start_rounds_up_to_first_multiple_of_step():
    assert SLWSchedule("fixed_linear", 12, 512, 1000, 8).seqlen(1) == 16
    assert SLWSchedule("fixed_linear", 8, 512, 1000, 16).seqlen(1) == 16  # was 0 before DeepSpeed 0.19
    assert SLWSchedule("fixed_linear", 10, 512, 100, 8).seqlen(100) == 512


def test_invalid_schedules_are_rejected():
    with pytest.raises(ValueError, match="schedule_type"):
        SLWSchedule("linear", 8, 512, 100, 8)
    with pytest.raises(ValueError, match="min_seqlen"):
        SLWSchedule("fixed_linear", 1024, 512, 100, 8)
    with pytest.raises(ValueError, match="lacks"):
        SLWSchedule.from_deepspeed({"min_difficulty": 8})
    with pytest.raises(ValueError, match="fixed_root schedule lacks 'root_degree'"):
        SLWSchedule.from_deepspeed(
            {
                "min_difficulty": 8,
                "max_difficulty": 64,
                "schedule_type": "fixed_root",
                "schedule_config": {"total_curriculum_step": 10, "difficulty_step": 8},
            }
        )


SEQLEN = {
    "min_difficulty": 16,
    "max_difficulty": 128,
    "schedule_type": "fixed_linear",
    "schedule_config": {"total_curriculum_step": 100, "difficulty_step": 8},
}


def data_efficiency(metrics, enabled=True):
    return {
        "train_batch_size": 8,
        "data_efficiency": {
            "enabled": enabled,
            "data_sampling": {"enabled": True, "curriculum_learning": {"enabled": True, "curriculum_metrics": metrics}},
        },
    }


def test_deepspeed_config_locations():
    block = deepspeed_curriculum(data_efficiency({"seqlen_truncate": {**SEQLEN, "difficulty_type": "value"}}))
    assert block["enabled"] is True and SLWSchedule.from_deepspeed(block).seqlen(1) == 16
    assert deepspeed_curriculum(data_efficiency({"seqlen": SEQLEN}, enabled=False))["enabled"] is False
    legacy = {**SEQLEN, "enabled": True, "curriculum_type": "seqlen"}
    assert deepspeed_curriculum({"curriculum_learning": legacy}) == legacy


@pytest.mark.parametrize(
    "config,match",
    [
        ({"train_batch_size": 8}, "no curriculum_learning block"),
        ({"data_efficiency": {"data_sampling": {}}}, "no curriculum_learning block"),
        ({**data_efficiency({"seqlen": SEQLEN}), "curriculum_learning": SEQLEN}, "both"),
        (data_efficiency({"vocabularyrarity": SEQLEN}), "one sequence-length metric"),
        (data_efficiency({"seqlen": SEQLEN, "seqlen_truncate": SEQLEN}), "one sequence-length metric"),
        (data_efficiency({}), "lacks 'curriculum_metrics'"),
    ],
)
def test_deepspeed_config_errors(config, match):
    with pytest.raises(ValueError, match=match):
        deepspeed_curriculum(config)


def test_truncate_keeps_first_tokens():
    x = torch.arange(20).view(2, 10)
    assert truncate(x, 4).tolist() == [[0, 1, 2, 3], [10, 11, 12, 13]]
