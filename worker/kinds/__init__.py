"""The job kinds, one module each: what the runner runs (see `worker.queue.JobKind`)."""

from __future__ import annotations
