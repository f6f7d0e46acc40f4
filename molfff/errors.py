"""The one exception type for bad user input (files, flags, configs, checkpoints).

The command line prints its message on one line and exits non-zero, without a traceback.
"""


class UserError(Exception):
    """Something the user gave cannot be used; the message says what and where."""
