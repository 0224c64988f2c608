"""`gradvar diagnose PATH`: diagnose your own (possibly divergent) run from its log.

    gradvar diagnose runs/my_run                      # a gradvar run directory
    gradvar diagnose out/checkpoint-500/trainer_state.json -o diag/
    gradvar diagnose metrics.csv --ratio-threshold 1.5 --json
    gradvar diagnose pasted_trainer_output.txt --logging-steps 10

Bad input prints one line, `gradvar diagnose: error: <message>`, to stderr and returns 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

import numpy as np

from gradvar.spikes import SpikeRule

from ..logs import LogError, load_log
from . import SNIPPET, Diagnosis, diagnose
from .advice import HF_SNIPPET
from .attribution import attribution_lines

PROG = "gradvar diagnose"


def main_diagnose(args) -> int:
    """Run the command; 0 on success, 2 on bad input (one line on stderr)."""
    try:
        rule = SpikeRule(ratio_threshold=float(args.ratio_threshold), min_rise=float(args.min_rise))
        if int(args.horizon) < 1:
            raise ValueError(f"--horizon must be >= 1, got {args.horizon}")
        if getattr(args, "logging_steps", None) is not None and args.logging_steps < 1:
            raise ValueError(f"--logging-steps must be >= 1, got {args.logging_steps}")
        log = load_log(args.path, logging_steps=getattr(args, "logging_steps", None))
        if getattr(args, "vocab_size", None) is not None and args.vocab_size < 2:
            raise ValueError(f"--vocab-size must be >= 2, got {args.vocab_size}")
        diag = diagnose(
            log,
            rule=rule,
            horizon=int(args.horizon),
            vocab_size=getattr(args, "vocab_size", None),
            seq_axis=getattr(args, "seq_axis", None),
        )
        report = None
        if args.out_dir:
            from .report import write_diagnosis_report  # matplotlib only when a report is asked for

            report = write_diagnosis_report(diag, log, args.out_dir)
    except (LogError, ValueError, OSError) as exc:
        return _fail(str(exc) or type(exc).__name__)
    except ModuleNotFoundError:
        raise  # an optional package not installed (matplotlib for -o): `gradvar` names the extra to install
    except Exception as exc:  # a bug of ours must still not dump a traceback on a user with a broken run
        return _fail(f"internal error ({type(exc).__name__}: {exc}); please report it", code=1)
    if args.json:
        d = diag.to_dict()
        d["report"] = str(report) if report else None
        _emit(json.dumps(d, indent=1))
    else:
        _emit(format_text(diag, report))
    return 0


def _emit(text: str) -> None:
    """Print to stdout; a reader that left early (`gradvar diagnose log | head`) ends the output quietly."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would print a traceback when it flushes stdout at exit: point stdout at /dev/null instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fail(message: str, code: int = 2) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _num(v, fmt: str = "{:.3g}") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    if isinstance(v, float) and np.isinf(v):
        return "inf"
    return fmt.format(v)


def format_text(diag: Diagnosis, report=None, width: int = 100) -> str:
    """The plain-text summary the command prints."""
    wrap = lambda s, ind="  ": textwrap.fill(s, width, initial_indent=ind, subsequent_indent=ind + "  ")  # noqa: E731
    out = [f"{PROG}: {diag.source}", textwrap.fill(diag.summary, width), ""]
    sp = diag.spikes
    out.append(f"Spike events ({len(sp)}):" if len(sp) else "Spike events: none")
    if len(sp):
        out.append(
            f"  {'#':>3}  {'kind':<15}{'steps':<16}{'entries':>8}{'peak loss':>11}{'ratio':>8}{'rise':>9}  severity"
        )
        for _, e in sp.head(30).iterrows():
            steps = f"{e['start_step']}-{e['end_step']}" if e["end_step"] != e["start_step"] else str(e["start_step"])
            out.append(
                f"  {e['event']:>3}  {e['kind']:<15}{steps:<16}{e['n_entries']:>8}{_num(e['peak_loss']):>11}"
                f"{_num(e['peak_ratio'], '{:.2f}'):>8}{_num(e['rise']):>9}  {e['severity']}"
            )
        if len(sp) > 30:
            out.append(f"  ... {len(sp) - 30} more")
    out += ["", f"Signals before the events (horizon {diag.horizon} entries = {diag.horizon * diag.interval:g} steps):"]
    if len(diag.signals):
        out.append(
            f"  {'signal':<22}{'role':<10}{'variant':<18}{'AUROC':>6}{'hits':>6}{'chance':>7}"
            f"{'lead(entries)':>14}{'lead(steps)':>12}{'at spike':>9}"
        )
        for _, s in diag.signals.head(15).iterrows():
            out.append(
                f"  {s['signal'][:21]:<22}{s['role']:<10}{s['variant']:<18}{_num(s['auroc'], '{:.2f}'):>6}"
                f"{_num(s['hit_rate'], '{:.0%}'):>6}{_num(s['chance_hit_rate'], '{:.0%}'):>7}"
                f"{_num(s['median_lead_entries'], '{:.0f}'):>14}{_num(s['median_lead_steps'], '{:.0f}'):>12}"
                f"{_num(s['at_spike'], '{:.2f}x'):>9}"
            )
    else:
        out.append("  (no other numeric signal in this log)")
    if diag.attribution:
        out += ["", "What moved first:"] + [wrap(ln) for a in diag.attribution for ln in attribution_lines(a)]
    out += ["", "Advice:"] + [wrap(f"- {a}") for a in diag.advice]
    if diag.record_more:
        out += ["", "Record next time (import gradvar):"] + [f"    {ln}" for ln in SNIPPET.splitlines()]
        out += ["  Hugging Face Trainer:", f"    {HF_SNIPPET}"]
    if diag.notes:
        out += ["", "Notes:"] + [wrap(f"- {n}") for n in diag.notes]
    if report:
        out += ["", f"Report: {report} (and report.html beside it)"]
    return "\n".join(out)


def main(argv=None) -> int:
    """Standalone entry: python -m analysis.diagnosis.cli PATH."""
    from ..cli import add_diagnose_arguments

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_diagnose_arguments(parser).set_defaults(func=main_diagnose)
    return main_diagnose(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
