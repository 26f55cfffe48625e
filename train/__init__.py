"""zeroft's trainer and data preparation (accelerate-based); see train.train and train.prepare."""

from zeroft import quiet  # noqa: F401  other libraries' import-time noise, filtered before they load
