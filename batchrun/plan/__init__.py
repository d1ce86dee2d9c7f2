"""Plan: what a run has to do, before it sends anything.

Takes: the input index and the output.
Gives: new, changed, unchanged and removed rows and the list of rows to send (``diff``),
the input index kept beside the output and reused while the input is unchanged
(``kept_index``), and the estimate of a run's requests and tokens (``estimate``).
"""
