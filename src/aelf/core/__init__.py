"""The core layer: data, models, attacks, methods, configuration, training, checkpoints, distributed runs.

Nothing here imports from :mod:`aelf.workflows` or :mod:`aelf.apps`.
"""

__version__ = "0.1.0"
