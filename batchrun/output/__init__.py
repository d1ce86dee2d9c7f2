"""Output: the answers on disk, crash-safe, one row per id, checked when read.

Takes: answered rows (Arrow tables) from ``send``.
Gives: Parquet parts with page checksums, their footers checked against their rows
(``parts``), the journal and the lock (``store``), checksummed stream batches (``streams``),
each file's name (``layout``), the output's format and identity (``identity``), the parts'
sequence numbers and checks (``catalogue``), what is done as DuckDB queries (``done``),
compaction, answers reusable by request hash (``archive``), the run's trace (``events``).
"""
