"""Errors meant for the person at the terminal: the CLI prints them as one line, exit 2."""


class UserError(Exception):
    """Bad input or usage: the message says what is wrong and what to do."""
