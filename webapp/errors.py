"""The one way the app tells a visitor that something is wrong with a request."""

from __future__ import annotations

import gradio as gr


def user_error(message: str) -> gr.Error:
    """A plain message for the visitor; expected input errors print no traceback in the server's log."""
    return gr.Error(message, print_exception=False)
