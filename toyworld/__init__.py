"""The toy world: a synthetic world, its models trained from scratch, the embedded checkpoint, and its evaluation.

A client of ``zeroft`` (the library) and ``train`` (the trainer); neither imports it. The
command line is ``python -m toyworld`` (toyworld/__main__.py).
"""

from zeroft import quiet  # noqa: F401  other libraries' import-time noise, filtered before they load
