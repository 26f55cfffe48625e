"""The gradio internals webapp.components relies on, checked against the installed gradio: each test fails when an
upgrade changes one (the release they were read from is webapp.components.GRADIO_CHECKED; pyproject.toml caps
gradio below 7 for them)."""

import inspect

import gradio as gr
import pytest
from gradio.exceptions import InvalidPathError

from webapp import components


def test_the_installed_gradio_is_the_major_release_the_fence_was_checked_on():
    assert gr.__version__.split(".")[0] == components.GRADIO_CHECKED.split(".")[0]


def test_the_editor_keeps_uploaded_blobs_in_a_dict_by_id():
    """PhotoEditor.preprocess pops the editor's blob by its id from ``blob_storage``."""
    editor = components.PhotoEditor()
    assert isinstance(editor.blob_storage, dict)


@pytest.mark.parametrize("component, name", [(components.PhotoEditor, "imageeditor"), (components.PhotoInput, "image"),
                                             (components.PhotoUpload, "uploadbutton"), (components.Setting, "slider"),
                                             (components.SeedBox, "number"), (components.CheckpointChoice, "dropdown")])
def test_each_subclass_is_drawn_with_gradios_own_front_end_component(component, name):
    base = next(c for c in component.__mro__ if c.__module__.startswith("gradio."))
    assert base().get_block_name() == name == component().get_block_name()


def test_blocks_preprocess_data_is_the_async_step_the_app_wraps():
    method = gr.Blocks.preprocess_data
    assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(method).parameters)[:3] == ["self", "block_fn", "inputs"]
    assert issubclass(InvalidPathError, Exception)
