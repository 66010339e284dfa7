"""The one error type a user can act on; the CLI turns it into exit 2 and a single line."""


class TRMEdgeError(Exception):
    """Bad input or a bad file: the message says what is wrong and what to do."""

    exit_code = 2


class CheckFailed(TRMEdgeError):
    """A verification or accuracy budget was missed (exit 1): the message carries the numbers."""

    exit_code = 1
