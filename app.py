"""zeroft's Gradio app: one photo of an object + a prompt → new images of that object.

    python app.py [--checkpoint DIR_OR_ID] [--host HOST] [--port PORT] [--share] [--time-budget SECONDS]

This is the entry Hugging Face Spaces run (``app_file`` in README.md's front matter); the app itself is
the package webapp/. ``demo`` is defined at module level, as Spaces and gradio's reload mode
(``gradio app.py``) expect; importing this file loads no model on a CPU (the model loads on the first
request; on ZeroGPU at start-up, as ZeroGPU requires).
"""

import webapp.zerogpu  # noqa: F401  first: on ZeroGPU, spaces must be imported before anything initialises CUDA
from webapp.launch import build, launch

demo, args = build(None if __name__ == "__main__" else [])

if __name__ == "__main__":
    launch(demo, args)
