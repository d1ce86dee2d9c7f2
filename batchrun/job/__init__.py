"""The job: what the user asked for, read and checked before anything runs.

Takes: a job file (TOML) or a dict, and the command line's run options.
Gives: a ``Job`` (``spec``: the validated fields, its request fingerprint), the checks that name
what to fix (``checks``), the models SciBox serves and their limits (``catalog``), the JSON
schema of structured answers (``answerschema``) and a shard's share of the ids (``shards``).
"""
