"""Exceptions that the command line turns into a one-line message and exit status 2."""


class InputError(ValueError):
    """Bad user input: unreadable file, invalid array, unknown option value.

    The message is a single line meant for the user; the CLI prints it without a traceback.
    """
