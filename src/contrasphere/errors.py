"""The errors contrasphere raises about its user's input, as opposed to its own bugs.

Every exception here says what is wrong and what to do. The command line prints the message of a
:class:`UserError` as one ``error:`` line and exits with status 2; any other exception is a bug and keeps its
traceback. Each class also derives from the built-in exception a caller would expect (``ValueError`` for a bad
value, ``FileNotFoundError`` for missing data), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """Something about the input (a setting, a file, a folder) is wrong; the message says what to do."""


class ConfigError(UserError, ValueError):
    """A recipe field, hyperparameter or command-line option has a value no run can use."""


class RunError(UserError, RuntimeError):
    """A run folder is in use, holds another run, or its checkpoint or recipe is damaged or does not match."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A dataset or file is not where it was looked for (the message lists where and how to get it)."""


class MissingRunError(RunError, FileNotFoundError):
    """A run folder or checkpoint that should exist (``--resume``, ``contrasphere eval``) does not."""


class InputError(UserError, ValueError):
    """A tensor, array or file handed to a function has the wrong shape, values or contents (NaN, not unit norm)."""


class InputTypeError(UserError, TypeError):
    """An argument has the wrong type (a list where a tensor is needed, integer embeddings)."""
