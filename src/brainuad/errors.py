"""The one exception type for problems in a user's input.

The CLI prints its message as a single line and exits non-zero; anything else is a bug and keeps
its traceback.
"""


class BrainUADError(ValueError):
    """Bad input: the message names the file (or option) and what is wrong with it."""
