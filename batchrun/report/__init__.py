"""Report: what a run did and what an output holds, for people and tools.

Takes: a job, its output and its trace.
Gives: ``validate`` and ``status`` texts (``overview``), the HTML report (``html``), the
output exported as files (``export``) and Prometheus metrics (``metrics``).
"""
