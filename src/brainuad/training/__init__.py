"""Training a model kind into a run directory: the Lightning loop, several processes, resume,
and reuse of a finished run."""
