"""`gradvar report` and `gradvar diagnose`, registered through the gradvar.commands entry points."""
from __future__ import annotations


def register_report(sub) -> None:
    from .report import add_report_arguments

    add_report_arguments(sub.add_parser("report", help="write a report (markdown, HTML, figures) from run directories"))


def register_diagnose(sub) -> None:
    from .diagnose.cli import add_diagnose_arguments

    add_diagnose_arguments(sub.add_parser("diagnose", help="diagnose your own run's log: spikes, leading signals, advice"))
