"""Host-side assembly of the tidy tables from combined raw statistics (runs at flush time, on rank 0).

The spike detectors run here, on the host, over the flushed losses in step order: the same pure rules as
the offline analysis. Their state, the tokens and the sequence lengths that label the rows are the run's
(gradvar.run_state), saved in checkpoints so a resumed run continues them; a builder keeps none of it.
"""

from __future__ import annotations

import math

import numpy as np

from .quantities.base import FlushMeta
from .quantities.probe import finalize_probe_rows
from .run_state import RunState, nan_if_none
from .schema import PROBES, STEPS, STEPS_EXTRA


class RowBuilder:
    def __init__(self, groups: list[str], world_size: int, run: RunState):
        self.groups, self.world_size, self.run = groups, world_size, run
        self.notes: list[tuple[str, str]] = []  # (reason, message) the quantities raised in the latest build

    def build(self, metas: list[dict], raw: dict, quantities, side_rows, layers_every: int) -> dict:
        n = len(metas)
        col = lambda key: np.array([nan_if_none(m[key]) for m in metas], dtype=np.float64)  # noqa: E731
        raw["_k_local"] = col("k_local")[:, None]
        meta = FlushMeta(self.world_size, col("batch_size"))
        steps = {k: col(k) for k in ("step", "tokens", "seqlen", "batch_size", "lr", "time_s")}
        layer_cols = {}
        self.notes = []
        for q in quantities:
            cols, per_group = q.finalize(raw, meta, self.groups)
            steps.update(cols)
            layer_cols.update(per_group)
            self.notes += q.notes(raw)
        for name in raw:
            if name.startswith("extra:"):
                steps[name[len("extra:") :]] = raw[name][:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            steps["tokens_per_s"] = col("step_tokens") / steps["time_s"]
        steps["world_size"] = np.full(n, float(self.world_size))
        spikes = self._spikes(steps, metas)
        self._probe_ratio(steps)
        for m in metas:
            self.run.remember(m["step"], m["tokens"], m["seqlen"])
        out = {"steps": _records(steps, n), "layers": self._layers(steps, layer_cols, layers_every)}
        out["ranks"] = self._ranks(steps, raw)
        probes = [r for t, r in side_rows if t == "probes"]
        if probes:
            for r in probes:
                tokens, seqlen = self.run.labels(r["step"])
                r["tokens"], r["seqlen"] = int(tokens), nan_if_none(seqlen)
            out["probes"] = [{c: r[c] for c in PROBES} for r in finalize_probe_rows(probes)]
        out["events"] = self._step_events(steps, spikes)
        return {k: v for k, v in out.items() if v}

    def _spikes(self, steps: dict, metas) -> list[tuple]:
        """The spike columns; (row, loss, verdict) of each spike event that starts in this flush."""
        loss = steps.get("loss")
        n = len(metas)
        for key in ("loss_ratio", "spike_ratio", "spike_z", "loss_z"):
            steps[key] = np.full(n, np.nan)
        new_events: list[tuple] = []
        if loss is None:
            return new_events
        for i, value in enumerate(loss):
            if np.isnan(value) and steps.get("nonfinite_loss", np.ones(n))[i] == 0:
                continue  # no loss was given at this step
            r = self.run.spike(float(value))
            steps["loss_ratio"][i], steps["loss_z"][i] = r["loss_ratio"], r["z"]
            steps["spike_ratio"][i], steps["spike_z"][i] = float(r["spike_ratio"]), float(r["spike_z"])
            if r["new_event"]:
                new_events.append((i, float(value), r))
        return new_events

    def _probe_ratio(self, steps: dict) -> None:
        probe = steps.get("probe_loss")
        steps["probe_loss_ratio"] = np.full(len(steps["step"]), np.nan)
        if probe is None:
            return
        for i, v in enumerate(probe):
            steps["probe_loss_ratio"][i] = self.run.probe_ratio(v)

    def _step_events(self, steps, spikes: list[tuple]) -> list[dict]:
        out = []
        for i, value, r in spikes:
            kind = "nonfinite_loss" if not np.isfinite(value) else "spike"
            rules = "+".join(k for k in ("ratio", "z") if r[f"spike_{k}"])
            msg = f"loss {value:.4g} (ratio {r['loss_ratio']:.3g}, z {r['z']:.3g}; rule {rules})"
            out.append(self._event_at(steps, i, kind, msg, value))
        bad = steps.get("nonfinite_grad")
        if bad is not None:
            for i in np.flatnonzero(bad > 0):
                out.append(
                    self._event_at(steps, i, "nonfinite_grad", f"{int(bad[i])} non-finite gradient elements", bad[i])
                )
        return out

    @staticmethod
    def _event_at(steps, i, kind, msg, value):
        return {
            "step": int(steps["step"][i]),
            "tokens": int(steps["tokens"][i]),
            "seqlen": steps["seqlen"][i],
            "kind": kind,
            "value": float(value),
            "message": msg,
        }

    def _layers(self, steps, layer_cols, every: int) -> list[dict]:
        rows = []
        for i, step in enumerate(steps["step"]):
            if int(step) % every:
                continue
            for (group, stat), values in layer_cols.items():
                if not np.isnan(values[i]):
                    rows.append(
                        {
                            "step": int(step),
                            "tokens": int(steps["tokens"][i]),
                            "seqlen": steps["seqlen"][i],
                            "group": group,
                            "stat": stat,
                            "value": float(values[i]),
                        }
                    )
        return rows

    def _ranks(self, steps, raw) -> list[dict]:
        if self.world_size < 2 or "rank_loss" not in raw:
            return []
        rows = []
        for i, step in enumerate(steps["step"]):
            for r in range(self.world_size):
                gs = raw["rank_micro_sq"][i, r] if "rank_micro_sq" in raw else math.nan
                rows.append(
                    {
                        "step": int(step),
                        "tokens": int(steps["tokens"][i]),
                        "seqlen": steps["seqlen"][i],
                        "rank": r,
                        "loss": float(raw["rank_loss"][i, r]),
                        "grad_sq_micro_local": float(gs),
                    }
                )
        return rows


def _records(cols: dict, n: int) -> list[dict]:
    order = [c for c in STEPS + STEPS_EXTRA if c in cols] + [c for c in cols if c not in STEPS + STEPS_EXTRA]
    for c in STEPS:
        if c not in cols:
            cols[c] = np.full(n, np.nan)
            order.append(c)
    return [{c: _py(cols[c][i]) for c in order} for i in range(n)]


def _py(v):
    return int(v) if isinstance(v, (np.integer,)) else float(v)
