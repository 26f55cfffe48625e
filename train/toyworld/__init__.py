"""The toy world: a synthetic world, its models trained from scratch, and the embedded checkpoint."""
