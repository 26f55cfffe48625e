"""Other libraries' import-time messages that tell a zeroft user nothing, kept out of terminals and Space logs.

Importing diffusers, torchao and bitsandbytes on a CPU machine printed four lines before every command,
``--help`` included (versions checked: torch 2.14.1, torchao 0.18.0, diffusers 0.42.1, bitsandbytes 0.50.2):

- bitsandbytes: "Failed to load CPU gemm_4bit_forward from kernels-community ..." (its optional CPU 4-bit
  kernel; zeroft's 4-bit mode runs on CUDA only);
- torch, twice: "<enum ...> is an Enum subclass and is now natively supported by torch.compile ..."
  (torchao registering its enums the old way);
- diffusers: "Unable to import `torchao` Tensor objects ..." (torchao-serialized checkpoints, which
  zeroft never reads: it quantizes as it loads).

Each is dropped by its logger and the start of its text, so any other message of those loggers still
shows. ``zeroft/__init__.py`` installs the filters before anything imports those libraries.
"""

from __future__ import annotations

import logging

# logger name -> the starts of the messages dropped from it
DROPPED = {
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    "torch.utils._pytree": ("%s is an Enum subclass and is now natively supported",),
    "diffusers.quantizers.torchao.torchao_quantizer": ("Unable to import `torchao` Tensor objects",),
}


class _Drop(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def install() -> None:
    """Add the filters (once per logger)."""
    for name, starts in DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(starts))


install()
