"""zeroft's trainer and data preparation (accelerate-based); see train.train and train.prepare."""
