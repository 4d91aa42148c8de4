"""The one exception type users see: a problem they can fix, explained in one line."""


class UserError(Exception):
    """Bad input or environment; ``str(exc)`` names the file/key and what to do.

    Entry points catch it, log the line without a stack trace and exit with status 2.
    """


def one_line(exc: UserError) -> str:
    """The user's line, also when a DataLoader worker re-raised it with its traceback attached."""
    text = str(exc).strip()
    if "Original Traceback" in text:  # torch's ExceptionWrapper: the last line is the original
        text = text.splitlines()[-1].removeprefix(f"{UserError.__module__}.UserError: ")
    return text
