"""The app as a program: ``create_app`` (the page on the chosen model) and the command line.

    python app.py [--checkpoint DIR_OR_ID] [--host HOST] [--port PORT] [--share] [--time-budget SECONDS]

The address follows gradio's own rule unless given: ``--host``, else $GRADIO_SERVER_NAME, else
127.0.0.1 (loopback: a local run is not on the network); ``--port``, else $GRADIO_SERVER_PORT, else
7860. Hugging Face Spaces set GRADIO_SERVER_NAME=0.0.0.0 and run ``python app.py``, so a Space
listens where Spaces route to it.
"""

from __future__ import annotations

import argparse
import sys

import gradio as gr

import zeroft
from zeroft.flags import ArgumentParser

from . import zerogpu
from .catalogue import CHECKPOINT_ENV, REAL_DEFAULT, Checkpoints, default_checkpoint
from .examples import load_examples
from .handlers import TIME_BUDGET, Handlers
from .layout import build_demo
from .paths import EXAMPLE_FOLDERS, REAL_EXAMPLES, TOY_EXAMPLES
from .uploads import MAX_UPLOAD


def create_app(checkpoint: str | None = None, time_budget: float = TIME_BUDGET) -> gr.Blocks:
    """The app on ``checkpoint``, else on webapp.catalogue.default_checkpoint's choice (the real default where a
    GPU is). On ZeroGPU the default model is loaded, to ``cuda``, now (webapp.zerogpu); elsewhere on the first
    request.

    Raises:
        zeroft.InputError: ``checkpoint`` (or $ZEROFT_CHECKPOINT) is a model the app could never load.
    """
    offered = Checkpoints(default_checkpoint(checkpoint))
    default = offered.names[0]
    pipe = zerogpu.preload(lambda: zeroft.get_pipeline(offered.where(default), device=zerogpu.preload_device(),
                                                       dtype=zerogpu.ZEROGPU_DTYPE))
    handlers = Handlers(offered, time_budget, loaded={default: pipe} if pipe is not None else None)
    return build_demo(handlers, checkpoints=offered, examples=load_examples(TOY_EXAMPLES),
                      real_examples=load_examples(REAL_EXAMPLES))


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog="app.py", description="zeroft's Gradio app")
    parser.add_argument("--checkpoint", default=None, help=f"checkpoint folder, Hub id or preset (default: ${CHECKPOINT_ENV}, "
                        f"else {REAL_DEFAULT} on a CUDA GPU, else the embedded toy model zeroft-toy)")
    parser.add_argument("--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT, else 7860)")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--time-budget", type=float, default=TIME_BUDGET, metavar="SECONDS",
                        help=f"refuse a request estimated to take longer (default {TIME_BUDGET:g})")
    args = parser.parse_args(argv)
    if not args.time_budget > 0:
        parser.error("--time-budget must be a positive number of seconds")
    if args.port is not None and not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, not {args.port}")
    return args


def build(argv=None) -> tuple[gr.Blocks, argparse.Namespace]:
    """The app for a command line (``argv``; None: sys.argv), or exit with one ``error:`` line (status 2)."""
    args = parse_args(argv)
    quiet_dropped_event_loops()
    try:
        demo = create_app(args.checkpoint, args.time_budget)
    except zeroft.InputError as error:
        print(f"app.py: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return demo, args


def quiet_dropped_event_loops() -> None:
    """Keep the "Invalid file descriptor: -1" tracebacks of dropped event loops out of the log.

    gradio (checked on 6.31.0) opens a new asyncio event loop for each lock it makes outside a running
    loop (``utils.safe_get_lock``, several per page) and sets it as the thread's loop, replacing the
    last without closing it. When the garbage collector later finalizes one, its ``close`` finds its
    self-pipe socket already finalized and raises ValueError inside ``__del__``, which Python reports
    as "Exception ignored in: BaseEventLoop.__del__" with a traceback (a Space's log showed three after
    start-up). Nothing is lost: the loop never ran. This hook drops exactly that report and hands every
    other unraisable exception to the hook that was there before.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        dropped_loop = (getattr(unraisable.object, "__qualname__", "") == "BaseEventLoop.__del__"
                        and isinstance(unraisable.exc_value, ValueError)
                        and "Invalid file descriptor" in str(unraisable.exc_value))
        if not dropped_loop:
            previous(unraisable)

    sys.unraisablehook = hook


def launch(demo: gr.Blocks, args: argparse.Namespace) -> None:
    """Serve ``demo``; None for host and port leaves them to gradio's environment variables (module docstring)."""
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD,
                    allowed_paths=EXAMPLE_FOLDERS)
    except KeyboardInterrupt:  # Ctrl-C while gradio is still starting (once serving, gradio stops quietly itself)
        demo.close()


def main(argv=None) -> None:
    launch(*build(argv))
