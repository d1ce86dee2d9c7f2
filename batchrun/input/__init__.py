"""Input: the rows, read once, indexed, and read again only where work is left.

Takes: a ``Job``'s input files (JSONL, Parquet, an OpenAI batch file).
Gives: rows in file order (``readers``), the input index (``index``, made by ``build`` from
the lines ``lines`` finds and hashes), the whole input's checks (``checks``) and the rows
to do listed on disk (``selection``).
"""
