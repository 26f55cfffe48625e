"""Where the app's files are: the checkout it runs from and its example folders."""

from __future__ import annotations

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent  # the checkout's root, where app.py is
TOY_EXAMPLES = APP_DIR / "assets" / "examples"  # held-out toy objects, for toy-scale models
REAL_EXAMPLES = APP_DIR / "assets" / "examples-real"  # real photos with committed masks (LICENSES.md there)
EXAMPLE_FOLDERS = [str(TOY_EXAMPLES), str(REAL_EXAMPLES)]  # the folders launch() may serve files from
