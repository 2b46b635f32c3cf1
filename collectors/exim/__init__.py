"""Exim: the queue reader (spool ``input/`` and ``msglog/``, fallback ``exim -bp``), the mainlog
parser and its record→event adapter, and the files the throttle actions write for Exim to read.

Everything else (classification, accounting, exposition, rules, dashboards) is shared with Postfix.
"""
