"""The one exception type users see: a problem they can fix, explained in one line."""


class UserError(Exception):
    """Bad input or environment; ``str(exc)`` names the file/key and what to do.

    Entry points catch it, log the line without a stack trace and exit with status 2.
    """
