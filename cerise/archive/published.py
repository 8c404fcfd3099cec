"""A job's published files in the exchange: its outputs, its log and the log's offset record.

They outlive the WorkflowJob when it is archived, and go when the job is deleted or its
retention ends, whether it is live (the finalizer) or archived (the apiserver, the
operator's archiving loop).
"""

from __future__ import annotations

import shutil

from cerise.model.exchange import Exchange
from cerise.operator import joblog


def remove(exchange: Exchange, uid: str) -> None:
    """Remove the job's outputs and log (blocking: run it in a thread)."""
    shutil.rmtree(exchange.output_dir(uid), ignore_errors=True)
    for path in (exchange.log_path(uid), joblog.offset_path(exchange.log_path(uid))):
        path.unlink(missing_ok=True)
