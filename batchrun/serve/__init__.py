"""``batchrun serve``: OpenAI's Files and Batches API in front of SciBox, for a whole team.

Takes: OpenAI Files and Batches API calls from the team's clients (``serve.toml``: keys,
SciBox's endpoint and limits).
Gives: each batch run as a batchrun job (``runner``), its output and error files, batch
objects as OpenAI shapes them, and ``/metrics``.

Clients (the ``openai`` client, any code written for OpenAI's Batch API) upload JSONL batch
files and create batches; each batch is an ordinary batchrun job (input format
``openai-batch``, output under the state directory), so pacing, retries, resume and exactly
once hold for it. Several batches share each model's quota round robin; the interactive
endpoints are passed through under the same pacing.

Modules, by responsibility: ``config`` (serve.toml), ``auth`` (the clients' keys),
``problems`` (OpenAI-shaped errors), ``state`` (SQLite), ``files`` (uploads on disk, the
files routes' work), ``validation`` (the validating step), ``batches`` (the batches routes'
work), ``batchjobs`` (a batch's job and its output files), ``batchrunner`` (the lifecycle),
``fairslots`` (round robin of the quota), ``upstream`` (the service and the passthrough),
``metrics`` (``/metrics``), ``app`` (routes and serving), ``command`` (the CLI's entry).
"""
