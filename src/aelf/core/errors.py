"""Errors a user can cause and fix.

The CLI turns any :class:`AelfError` into one line on stderr and exit status 2; everything else is a bug and keeps
its traceback.
"""


class AelfError(Exception):
    """Bad input: a setting, a file or a folder the user gave us. The message names it and what is wrong."""


class ConfigError(AelfError, ValueError):
    """A setting that does not exist, has the wrong type or is out of range."""


class DataError(AelfError):
    """A data file that is missing, truncated or not in the promised format."""


class CheckpointError(AelfError):
    """A checkpoint or run folder that is missing, corrupt or does not fit the model."""


class DivergenceError(AelfError):
    """Training produced a non-finite loss."""


class TrainingInterrupted(AelfError):
    """SIGINT/SIGTERM arrived while training; a checkpoint was saved and the run can be resumed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class WriteFailed(OSError):
    """A file could not be written (a full disk, no permission, ...); ``filename`` names it and ``strerror`` says
    why. Files are written atomically, so the file that was there before is unchanged."""
