"""The one exception type users see: a one-line message naming the problem and the fix.

The CLI prints ``error: <message>`` and exits with code 2 for these; anything else is a bug and keeps
its traceback.
"""


class NasEngineError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConstraintUnsatisfiable(NasEngineError):
    """A strategy could not find an architecture that meets the FLOPs constraint."""
