"""The one exception type for problems the user can fix."""


class TpsloadError(Exception):
    """A problem the user can fix: printed as one line, exit code 2, no traceback."""

    exit_code = 2
