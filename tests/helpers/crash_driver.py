"""Run ``aelf`` like the CLI does, but deliver a signal to this very process right after training step N.

Usage: ``python crash_driver.py N SIGNAL aelf-args...`` (SIGNAL: KILL, TERM or INT; N = 0 never signals). Under
torchrun, ``CRASH_RANK=r`` in the environment limits the signal to rank r, and ``CRASH_ONCE=FILE`` signals only if
FILE does not exist yet (it is created first), so that a job restarted by ``torchrun --max-restarts`` runs through.
Signalling from inside the step makes the crash land at an exact, reproducible point of the run (mid-epoch, between two
checkpoints), which an external ``kill`` racing the process could not guarantee.
"""

import importlib
import os
import signal
import sys

from aelf.apps.cli import main

trainer = importlib.import_module("aelf.core.train")  # the module: the name aelf.train is the train() function
crash_rank = os.environ.get("CRASH_RANK")
signal_at_step = int(sys.argv[1]) if crash_rank in (None, os.environ.get("RANK", "0")) else 0
once = os.environ.get("CRASH_ONCE")
if once and signal_at_step:
    try:
        os.close(os.open(once, os.O_CREAT | os.O_EXCL))
    except FileExistsError:  # this is the restarted job: no crash this time
        signal_at_step = 0
signum = getattr(signal, f"SIG{sys.argv[2]}")
original_train_step = trainer.train_step
steps_done = 0


def train_step_then_signal(*args, **kwargs):
    global steps_done
    result = original_train_step(*args, **kwargs)
    steps_done += 1
    if steps_done == signal_at_step:
        os.kill(os.getpid(), signum)
    return result


trainer.train_step = train_step_then_signal
sys.exit(main(sys.argv[3:]))
