"""The one exception type for problems the user can fix.

``UserError`` is what leafrl raises for bad input: a setting, a file, a row, a model, a reward
function, a run directory, a missing tool, or a run that does not fit in memory. Its message
names the culprit and the fix, and the ``leafrl`` command prints it as one line. Any other
exception that reaches the command is a bug (in leafrl or a library it calls): the command prints
its traceback and asks for a report. ``UserError`` is a ``ValueError``, so code that calls
leafrl's functions and catches ``ValueError`` keeps working.
"""


class UserError(ValueError):
    """Bad input or environment, described in one line that names it and the fix."""
