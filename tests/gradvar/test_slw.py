"""SLW schedules against DeepSpeed's published CurriculumScheduler formula (re-derived here, stateful)."""
import math

import pytest
import torch

from gradvar.slw import SLWSchedule, truncate


class DeepSpeedReference:
    """DeepSpeed's legacy curriculum scheduler as documented: state advances each step until max."""

    def __init__(self, cfg):
        self.cfg, self.current = cfg, cfg["min_difficulty"]

    def update(self, step):
        c = self.cfg
        if self.current >= c["max_difficulty"]:
            return self.current
        s = c["schedule_config"]
        if c["schedule_type"] == "fixed_discrete":
            for diff, last in zip(s["difficulty"], s["max_step"]):
                if step <= last:
                    self.current = diff
                    return diff
            self.current = s["difficulty"][-1]
            return self.current
        degree = 1 if c["schedule_type"] == "fixed_linear" else s["root_degree"]
        d = (float(step) / s["total_curriculum_step"]) ** (1.0 / degree)
        d = math.floor(d * (c["max_difficulty"] - c["min_difficulty"]) + c["min_difficulty"])
        d -= d % s["difficulty_step"]
        self.current = min(d, c["max_difficulty"])
        return self.current


CONFIGS = [
    {"min_difficulty": 8, "max_difficulty": 1024, "schedule_type": "fixed_linear",
     "schedule_config": {"total_curriculum_step": 15000, "difficulty_step": 8}},
    {"min_difficulty": 64, "max_difficulty": 2048, "schedule_type": "fixed_root",
     "schedule_config": {"total_curriculum_step": 300, "difficulty_step": 8, "root_degree": 2}},
    {"min_difficulty": 10, "max_difficulty": 512, "schedule_type": "fixed_linear",  # start not a multiple of 8
     "schedule_config": {"total_curriculum_step": 97, "difficulty_step": 8}},
    {"min_difficulty": 13, "max_difficulty": 500, "schedule_type": "fixed_root",
     "schedule_config": {"total_curriculum_step": 50, "difficulty_step": 16, "root_degree": 3}},
    {"min_difficulty": 8, "max_difficulty": 128, "schedule_type": "fixed_discrete",
     "schedule_config": {"difficulty": [8, 32, 128], "max_step": [5, 10]}},
]


@pytest.mark.parametrize("block", CONFIGS, ids=lambda c: f"{c['schedule_type']}-{c['min_difficulty']}")
def test_matches_deepspeed_formula(block):
    ours, ref = SLWSchedule.from_deepspeed({**block, "enabled": True, "curriculum_type": "seqlen"}), DeepSpeedReference(block)
    total = block["schedule_config"].get("total_curriculum_step", 20)
    for step in range(1, int(total * 1.3) + 2):
        assert ours.seqlen(step) == ref.update(step), step


def test_start_below_min_when_not_multiple():
    s = SLWSchedule("fixed_linear", 10, 512, 100, 8)
    assert s.seqlen(1) == 8  # floor(10 + 5.02) = 15 -> 15 - 15 % 8 = 8
    assert s.seqlen(100) == 512 and s.seqlen(1000) == 512


def test_invalid_schedules_are_rejected():
    with pytest.raises(ValueError, match="rounds down to 0"):
        SLWSchedule("fixed_linear", 4, 512, 1000, 8)
    with pytest.raises(ValueError, match="schedule_type"):
        SLWSchedule("linear", 8, 512, 100, 8)
    with pytest.raises(ValueError, match="min_seqlen"):
        SLWSchedule("fixed_linear", 1024, 512, 100, 8)
    with pytest.raises(ValueError, match="lacks"):
        SLWSchedule.from_deepspeed({"min_difficulty": 8})


def test_truncate_keeps_first_tokens():
    x = torch.arange(20).view(2, 10)
    assert truncate(x, 4).tolist() == [[0, 1, 2, 3], [10, 11, 12, 13]]
