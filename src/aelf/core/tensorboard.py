"""Per-epoch scalars of a run for TensorBoard, in ``RUN/tensorboard/`` (view with ``tensorboard --logdir
RUN/tensorboard``).

TensorBoard is optional: without the ``tensorboard`` package the logger does nothing (one debug-level log message
says so) and training is unaffected.
"""

from __future__ import annotations

import logging
import numbers
from pathlib import Path
from typing import Any

LOG_DIR = "tensorboard"
SKIPPED = frozenset({"epoch", "step"})  # the x axis, not scalars to plot

log = logging.getLogger(__name__)


class TensorBoardLogger:
    """Writes each numeric value of an epoch's metrics row as a scalar ``tag = key`` at ``step``.

    ``purge_step``: when resuming, events at or after this step left by the interrupted run are discarded by
    TensorBoard, so a replayed epoch is not plotted twice (pass the first epoch that will be logged again).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, run_dir: str | Path, purge_step: int | None = None):
        self.log_dir = Path(run_dir) / LOG_DIR
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch.utils.tensorboard raises ImportError when tensorboard is missing
            log.debug("tensorboard is not installed (%s): no TensorBoard logs for %s", err, run_dir)
            return
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def log_epoch(self, row: dict[str, Any], step: int | None = None) -> None:
        """Log the numbers of ``row`` (a metrics.jsonl row) at ``step`` (default: ``row["epoch"]``); flushed at once
        so that a killed run keeps what it logged. Non-numeric values, ``epoch`` and ``step`` are skipped."""
        if self.writer is None:
            return
        step = int(row["epoch"]) if step is None else int(step)
        for key, value in row.items():
            if key in SKIPPED or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            self.writer.add_scalar(key, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
