"""The trainer's sequence-length probe: every probe_every steps and at the extra steps monitor.probe_at."""

import gradvar


def test_trainer_probes_at_probe_at_steps_on_equal_tokens(smoke, tmp_path):
    cfg = smoke.cfg(
        tmp_path,
        "probe_at",
        {
            "monitor.quantities": "full",
            "monitor.probe_every": 100,
            "monitor.probe_at": "[2,3]",
            "optim.train_tokens": 4 * 4 * 128,
        },
    )
    assert cfg.monitor.probe_at == [2, 3]
    smoke.train(cfg)
    probes = gradvar.read_records(cfg.run_dir, ["probes"])["probes"]
    assert sorted(probes.step.unique()) == [1, 2, 3]  # step 1 from probe_every, 2 and 3 from probe_at
    for _, at in probes.groupby("step"):
        assert sorted(at.probe_seqlen) == [16, 32, 64, 128]
        # 4 probe sequences x 128 predicted tokens, cut into pieces at every length
        assert (at.probe_tokens == cfg.monitor.probe_sequences * 128).all()
        assert (at.grad_sq_max > 0).all() and (at.grad_sq_max_micro >= at.grad_sq_max).all()
