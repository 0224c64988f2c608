"""The early-warning rule's parameters, plain numbers: the commands' --help shows them, and registering the
commands imports no numpy or pandas (analysis.records.warning applies the rule)."""

WINDOW = 50
"""Values before a position over which the rolling quantile is taken."""
HORIZON = 10
"""An event starting within this many positions (steps of a run, entries of a log) after an alarm counts as
warned."""
ALARM_Q = 0.95
"""Alarm when the signal exceeds this quantile of its previous WINDOW values."""
