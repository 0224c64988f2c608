"""gradvar's Lightning callback writes through the Trainer's own TensorBoardLogger: its event files (read
with tensorboard's EventAccumulator) hold the records' values at the optimizer step."""

from dashboard_files import tensorboard_scalars
from lightning.pytorch.loggers import TensorBoardLogger
from lightning_loops import Module, fit

import gradvar
from gradvar.integrations.lightning import GradvarCallback


def test_lightning_tensorboard_logger(tmp_path):
    logger = TensorBoardLogger(str(tmp_path / "tb"), name="fit")
    fit(Module(), [GradvarCallback(tmp_path / "gv", flush_every=2)], tmp_path / "a", logger=logger)
    steps = gradvar.read_records(tmp_path / "gv")["steps"]
    tb = tensorboard_scalars(logger.log_dir)
    assert tb["gradvar/loss"] == dict(zip(steps["step"], steps["loss"]))
    assert tb["gradvar/adam_v_max"] == dict(zip(steps["step"], steps["adam_v_max"]))
