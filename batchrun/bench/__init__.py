"""``python -m batchrun.bench`` (``make bench``): the figures of issues 4 and 6, measured in one
run.

Takes: the bench's sections (``--only``) and sizes (``--quick``).
Gives: one table of figures, each with its target and ratio, measured in one run.

The bench starts its own emulator processes on 127.0.0.1, writes job files and generated data
into a temporary directory (removed afterwards), runs ``batchrun run`` as child processes
(wall time, and CPU seconds and peak RSS from ``os.wait4``) and reads what the emulator saw
from ``GET /stats``. Monotonic clock times are system-wide on Linux, so the emulator's
admission times compare with the bench's own clock.

Modules: ``workspace`` (sizes, the temporary directory, progress lines), ``data`` (inputs, job
files, an output already done), ``processes`` (emulator and runner processes), ``launcher``
(the small process that spawns and measures each run, so its peak RSS is its own), ``paced``
(figures at the service's limits), ``baseline`` (the plain ``openai`` client), ``scale``
(figures with the limit lifted: runner cost, resume, memory), ``team`` (runner processes
sharing one limit through Redis), ``redisserver`` (the throwaway ``redis-server`` it starts),
``table`` (the printed table), ``cli`` (options and the order of the sections).
"""

from batchrun.bench.cli import main

__all__ = ["main"]
