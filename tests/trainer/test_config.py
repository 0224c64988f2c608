"""The run config: dotted overrides from command-line options and JSON files, validation with clear messages,
and DeepSpeed's `curriculum_learning` block taken as is."""

from __future__ import annotations

import json

import pytest

from gradvar.cli import Parser
from trainer import cli
from trainer.config import ConfigError, TrainConfig, apply_overrides, load_json, slw_schedule
from trainer.recipes import PRESETS, preset

DS_BLOCK = {  # as in a Megatron-DeepSpeed ds_config.json
    "enabled": True,
    "curriculum_type": "seqlen",
    "min_difficulty": 8,
    "max_difficulty": 128,
    "schedule_type": "fixed_linear",
    "schedule_config": {"total_curriculum_step": 100, "difficulty_step": 8},
}


def resolve(*argv: str) -> TrainConfig:
    parser = Parser(prog="test")
    cli.add_arguments(parser)
    return cli.resolve_config(parser.parse_args(list(argv)))


# ------------------------------------------------------------------------------------------ overrides


def test_cli_tokens_override_typed_fields():
    cfg = resolve(
        "--preset",
        "smoke",
        "--optim.lr",
        "6e-4",
        "--optim.batch_size",
        "8",
        "--slw.enabled",
        "true",
        "--model.dropout=0.1",
        "--slw.difficulties",
        "[8, 64]",
        "--name",
        "x",
    )
    assert cfg.optim.lr == 6e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.batch_size == 8 and isinstance(cfg.optim.batch_size, int)
    assert cfg.slw.enabled is True and cfg.model.dropout == 0.1 and cfg.slw.difficulties == [8, 64]
    assert cfg.name == "x" and cfg.model.n_layer == 2  # the rest of the smoke preset is kept


@pytest.mark.parametrize("text,expected", [("1e3", 1000), ("7", 7), ("7.0", 7)])
def test_int_fields_accept_integral_numbers(text, expected):
    assert apply_overrides(TrainConfig(), {"optim.max_steps": text}).optim.max_steps == expected


@pytest.mark.parametrize("text,expected", [("true", True), ("False", False), ("1", True), ("off", False)])
def test_bool_fields(text, expected):
    assert apply_overrides(TrainConfig(), {"slw.enabled": text}).slw.enabled is expected


def test_print_config_shows_overrides(capsys):
    assert cli.main(["--preset", "smoke", "--print-config", "--optim.lr", "6e-4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 6e-4 and printed["model"]["n_embd"] == 64


def test_nested_and_dotted_json_config(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"optim": {"lr": 1e-3, "warmup_steps": 3}, "model.n_layer": 3, "seed": 4}))
    cfg = apply_overrides(preset("smoke"), load_json(path))
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.model.n_layer, cfg.seed) == (1e-3, 3, 3, 4)


def test_saved_config_json_round_trips(tmp_path):
    """A run's config.json (with its `meta` block) rebuilds the same config: what --resume relies on."""
    cfg = apply_overrides(preset("smoke"), {"optim.lr": "6e-4", "slw.enabled": "true", "slw.total_steps": "7"})
    data = cfg.to_dict()
    data["meta"] = {"world_size": 2, "versions": {"torch": "x"}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert apply_overrides(TrainConfig(), load_json(path)).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate(name):
    preset(name).validate(world_size=1)


# ------------------------------------------------------------------------------------------ validation
def test_batch_not_divisible_by_ranks_times_micro():
    cfg = apply_overrides(preset("smoke"), {"optim.batch_size": 6, "optim.micro_batch_size": 2})
    cfg.validate(world_size=1)  # 6 = 3 micro-batches of 2 on one rank
    message = r"optim.batch_size 6 is not divisible by ranks \(2\) x optim.micro_batch_size \(2\)"
    with pytest.raises(ConfigError, match=message):
        cfg.validate(world_size=2)


def test_seq_len_above_context():
    cfg = apply_overrides(preset("smoke"), {"optim.seq_len": 256})
    with pytest.raises(ConfigError, match="optim.seq_len 256 exceeds model.n_positions 128"):
        cfg.validate()


def test_slw_end_length_above_context():
    cfg = apply_overrides(
        preset("smoke"),
        {
            "slw.enabled": True,
            "slw.schedule_type": "fixed_discrete",
            "slw.difficulties": [8, 64, 256],
            "slw.max_steps": [5, 10],
        },
    )
    with pytest.raises(ConfigError, match=r"slw end length 256 exceeds the model's context \(optim.seq_len 128\)"):
        cfg.validate()


def test_deepspeed_block_above_context_is_refused():
    cfg = apply_overrides(preset("smoke"), {"curriculum_learning": {**DS_BLOCK, "max_difficulty": 1024}})
    with pytest.raises(ConfigError, match="optim.seq_len 1024 exceeds model.n_positions 128"):
        cfg.validate()


def test_bad_slw_schedule_names_the_problem():
    cfg = apply_overrides(preset("smoke"), {"slw.enabled": True, "slw.schedule_type": "cubic"})
    with pytest.raises(ConfigError, match="slw: schedule_type must be one of"):
        cfg.validate()


@pytest.mark.parametrize("key", ["optim.lrr", "optimizer.lr", "lr", "optim.lr.x", "optim"])
def test_unknown_keys(key):
    with pytest.raises(ConfigError, match="unknown config key"):
        apply_overrides(TrainConfig(), {key: "1"})


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr' \(known here: .*\blr\b.*\)"):
        apply_overrides(TrainConfig(), {"optim.lrr": "1"})


@pytest.mark.parametrize(
    "key,value,typ",
    [
        ("optim.batch_size", "abc", "int"),
        ("optim.batch_size", "2.5", "int"),
        ("optim.lr", "fast", "float"),
        ("slw.enabled", "maybe", "bool"),
        ("slw.difficulties", "[8, 16", "list"),
    ],
)
def test_bad_types(key, value, typ):
    with pytest.raises(ConfigError, match=rf"{key}: cannot read '{value}' as {typ}".replace("[", r"\[")):
        apply_overrides(TrainConfig(), {key: value})


@pytest.mark.parametrize("key,value", [("optim.lr", "0"), ("optim.train_tokens", "-5"), ("optim.batch_size", "0")])
def test_non_positive_values(key, value):
    with pytest.raises(ConfigError, match=f"{key} must be > 0"):
        apply_overrides(TrainConfig(), {key: value}).validate()


def test_enum_fields():
    with pytest.raises(ConfigError, match="intervention.nonfinite must be skip, stop or record"):
        apply_overrides(TrainConfig(), {"intervention.nonfinite": "ignore"}).validate()
    with pytest.raises(ConfigError, match="monitor.quantities must be paper, full or minimal"):
        apply_overrides(TrainConfig(), {"monitor.quantities": "most"}).validate()


def test_cli_reports_config_errors_without_traceback(capsys):
    assert cli.main(["--preset", "smoke", "--optim.batch_size", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradvar train: error: optim.batch_size 3 is not divisible") and "Traceback" not in err
    assert cli.main(["--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_missing_and_invalid_json_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{'lr': 1}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_json(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="a config must be a JSON object"):
        load_json(tmp_path / "list.json")


# ------------------------------------------------------------------------------------------ DeepSpeed
def test_deepspeed_config_file_is_taken_as_is(tmp_path):
    """A whole DeepSpeed config (other keys included) via --deepspeed-config: only its block is used."""
    ds = {
        "train_batch_size": 512,
        "gradient_clipping": 1.0,
        "fp16": {"enabled": False},
        "curriculum_learning": DS_BLOCK,
    }
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(ds))
    cfg = resolve("--preset", "smoke", "--deepspeed-config", str(path))
    s = cfg.slw
    got = (s.enabled, s.schedule_type, s.min_seqlen, s.total_steps, s.difficulty_step)
    assert got == (True, "fixed_linear", 8, 100, 8)
    assert cfg.optim.seq_len == 128 and cfg.optim.batch_size == 4  # DeepSpeed's other keys are not ours
    cfg.validate()
    sched = slw_schedule(cfg)
    assert [sched.seqlen(t) for t in (1, 50, 100, 200)] == [8, 64, 128, 128]


def test_deepspeed_019_data_efficiency_config(tmp_path):
    """DeepSpeed 0.19's location of the block; the start rounds up to the first multiple of the step (12 -> 16)."""
    metric = {k: v for k, v in DS_BLOCK.items() if k not in ("enabled", "curriculum_type")}
    ds = {
        "data_efficiency": {
            "enabled": True,
            "data_sampling": {
                "enabled": True,
                "curriculum_learning": {
                    "enabled": True,
                    "curriculum_metrics": {"seqlen_truncate": {**metric, "min_difficulty": 12}},
                },
            },
        }
    }
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(ds))
    cfg = resolve("--preset", "smoke", "--deepspeed-config", str(path)).validate()
    assert cfg.slw.enabled and slw_schedule(cfg).seqlen(1) == 16
    path.write_text(json.dumps({"train_batch_size": 8}))
    with pytest.raises(ConfigError, match="ds_config.json: no curriculum_learning block"):
        resolve("--preset", "smoke", "--deepspeed-config", str(path))


def test_deepspeed_block_inside_our_config(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "optim": {"lr": 0.02},
                "curriculum_learning": {
                    **DS_BLOCK,
                    "schedule_type": "fixed_discrete",
                    "schedule_config": {"difficulty": [16, 64, 128], "max_step": [4, 8]},
                },
            }
        )
    )
    cfg = apply_overrides(preset("smoke"), load_json(path)).validate()
    assert cfg.optim.lr == 0.02 and cfg.slw.schedule_type == "fixed_discrete"
    assert [slw_schedule(cfg).seqlen(t) for t in (1, 4, 5, 8, 9)] == [16, 16, 64, 64, 128]


def test_deepspeed_block_disabled_and_malformed():
    off = {"curriculum_learning": {**DS_BLOCK, "enabled": False}}
    assert apply_overrides(preset("smoke"), off).slw.enabled is False
    with pytest.raises(ConfigError, match="curriculum_learning: .*lacks 'schedule_config'"):
        block = {k: v for k, v in DS_BLOCK.items() if k != "schedule_config"}
        apply_overrides(preset("smoke"), {"curriculum_learning": block})
    with pytest.raises(ConfigError, match="curriculum_learning must be a JSON object"):
        apply_overrides(preset("smoke"), {"curriculum_learning": "on"})


def test_slw_config_carries_every_schedule_field():
    """slw_schedule() copies fields by name: a field added to gradvar's SLWSchedule must appear in SLWConfig."""
    from dataclasses import fields

    from gradvar.slw import SLWSchedule

    cfg = apply_overrides(
        preset("tiny"),
        {
            "slw.enabled": True,
            "slw.min_seqlen": 16,
            "slw.total_steps": 40,
            "slw.schedule_type": "fixed_root",
            "slw.root_degree": 3,
        },
    )
    sched = slw_schedule(cfg)
    missing = [f.name for f in fields(SLWSchedule) if f.name != "max_seqlen" and not hasattr(cfg.slw, f.name)]
    assert missing == []
    assert (sched.min_seqlen, sched.total_steps, sched.schedule_type, sched.root_degree) == (16, 40, "fixed_root", 3)
    assert sched.max_seqlen == cfg.optim.seq_len
