"""The one exception type that means "the user gave us something wrong".

The CLI turns a UserError into a single line on stderr and exit code 2; anything
else is a bug in bsadvisor and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input: the message says what is wrong and how to fix it, in one line."""
