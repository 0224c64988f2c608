"""The public file-safety API a trainer writes with: gradvar.io.atomic_write_text and Monitor.truncate_after
(a rewind to a checkpoint drops the rows recorded after it, and the redone steps replace them)."""

import torch

import gradvar


def test_atomic_write_text_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "summary.json"
    gradvar.io.atomic_write_text(path, "old")
    gradvar.io.atomic_write_text(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_fsync_dir_is_best_effort(tmp_path):
    """The records and both checkpoint writers make their renames durable through it: a folder that cannot be
    opened (a platform that refuses folders, here one that is gone) costs the durability, never the write."""
    gradvar.io.fsync_dir(tmp_path)
    gradvar.io.fsync_dir(tmp_path / "gone")


def train(mon, model, opt, steps):
    for _ in range(steps):
        x = torch.randn(4, 3)
        loss = (model(x) ** 2).mean()
        loss.backward()
        opt.step()
        mon.step(loss=loss.detach())
        opt.zero_grad()


def test_monitor_truncate_after_drops_later_rows(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mon = gradvar.Monitor(model, opt, tmp_path, "minimal", flush_every=2)
    train(mon, model, opt, 6)
    mon.flush()
    assert gradvar.read_records(tmp_path, ["steps"])["steps"].step.tolist() == [1, 2, 3, 4, 5, 6]
    mon.truncate_after(3)
    assert gradvar.read_records(tmp_path, ["steps"])["steps"].step.tolist() == [1, 2, 3]
    mon.load_state_dict({**mon.state_dict(), "step": 3})  # what a rewind restores from the checkpoint
    train(mon, model, opt, 2)
    mon.close()
    assert gradvar.read_records(tmp_path, ["steps"])["steps"].step.tolist() == [1, 2, 3, 4, 5]
