"""Errors caused by a user's input, reported as one line without a traceback."""


class UserError(Exception):
    """Bad input: a missing file, a bad config, an empty run directory.

    The message names the problem and the fix. The command-line tool prints
    it as one line and exits with status 2; library callers can catch it.
    """


class ConfigError(UserError, ValueError):
    """A config value or key that cannot work."""
