"""zeroft's Gradio app, as a package: the root ``app.py`` is only the Space's entry.

One job per module:

- ``zerogpu``: what changes on a ZeroGPU Space (imported first: ``spaces`` before CUDA);
- ``catalogue``: the models the app offers, by the names visitors see, and the default one;
- ``examples``: the example rows (toy objects, real photos with committed masks);
- ``uploads``: an uploaded file's bytes, capped, decoded as the CLI decodes them;
- ``components``: the input components (gradio subclasses; the only module that touches gradio's
  internals);
- ``editor``: the editor's value and the visitor's state turned into a photo and a mask;
- ``handlers``: the functions behind the page and the API, one class;
- ``layout``: the page, ``build_demo``;
- ``launch``: ``create_app``, the command line and ``launch``.
"""

from . import zerogpu  # noqa: F401  first: on ZeroGPU, spaces must be imported before anything initialises CUDA
