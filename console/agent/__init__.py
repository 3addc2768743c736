"""`nitrodeck serve` and `nitrodeck fleet`: the host seen over HTTP, and many hosts seen at once.

A front end like the CLI and the TUI: it reads through core's read-only Lifecycle; the metric families
themselves are core's (core/ops/metrics.py).
"""
