"""The one exception type zeroft raises for bad user input.

Everything a person can get wrong (an unreadable photo, an empty mask, a guidance weight of
50) raises :class:`InputError` with a plain sentence that names the problem. The CLI prints
that sentence and exits with status 2; the app shows it with ``gr.Error``. Any other
exception is a bug in zeroft, not a user mistake.
"""


class InputError(ValueError):
    """Bad user input; ``str(error)`` is a message fit to show a person as it is."""


class ModelUnavailableError(RuntimeError):
    """A model needed for the request could not be loaded (failed download, missing file)."""


class HubUnavailableError(ModelUnavailableError):
    """A model was asked for from the Hugging Face Hub and the Hub could not be reached."""
