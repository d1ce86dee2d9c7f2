"""Tasks: what differs by request kind (chat, embeddings, an OpenAI batch file's lines).

Takes: a row's column values and the job.
Gives: the request to send and its hash (``hashing``), the answer as output columns, the
rows' schema; ``TASKS`` maps a job's ``kind`` to its task: nothing outside this package
branches on the kind.

A new request kind is a module here with a class that has the ``Task`` protocol
(``batchrun.tasks.base``) and a static ``fields(job)`` (its output columns), registered in
``TASKS``.
"""

from __future__ import annotations

from typing import Any, Protocol

import pyarrow as pa

from batchrun.errors import JobError
from batchrun.job.spec import Job
from batchrun.output.rows import ID, REQUEST_HASH, output_schema
from batchrun.tasks.base import Task
from batchrun.tasks.chat import ChatTask
from batchrun.tasks.embeddings import EmbeddingsTask
from batchrun.tasks.openai_batch import BatchFileTask


class TaskKind(Protocol):
    def __call__(self, job: Job, schema: pa.Schema) -> Task[Any]: ...

    @staticmethod
    def fields(job: Job) -> list[pa.Field]: ...


TASKS: dict[str, TaskKind] = {
    "chat": ChatTask,
    "embeddings": EmbeddingsTask,
    "openai-batch": BatchFileTask,
}


def job_schema(job: Job, kept: dict[str, pa.DataType]) -> pa.Schema:
    """The output schema of ``job`` with ``kept`` input columns; a kept column or a property
    of the answer schema that would take another column's name is a job-file error."""
    fields = TASKS[job.kind].fields(job)
    if job.answer_schema is not None:
        names = [ID.name, REQUEST_HASH.name, *kept, *(f.name for f in fields)]
        properties = [f.name for f in job.answer_schema.fields()]
        if clash := [name for name in properties if names.count(name) > 1]:
            raise JobError(
                f"{job.source}: [output].schema: the properties {', '.join(clash)} would take "
                "the names of columns batchrun writes (or keeps); rename them"
            )
    clash = sorted(set(kept) & {ID.name, *(field.name for field in fields)})
    if clash:
        raise JobError(
            f"{job.source}: [output].keep: {', '.join(clash)} would clash with an output column "
            "of the same name; drop it from keep"
        )
    return output_schema(kept, fields)


def task_for(job: Job, schema: pa.Schema) -> Task[Any]:
    """The task that does ``job``'s requests, writing rows of ``schema``."""
    return TASKS[job.kind](job, schema)
