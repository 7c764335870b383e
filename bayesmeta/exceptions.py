"""Exception and warning classes.

Every problem a user can fix is a :class:`BayesMetaError`. The CLI turns one into a single
line on stderr and exit code 2; it never shows a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class BayesMetaError(Exception):
    """Base class of all errors a user can act on."""


class DataError(BayesMetaError, ValueError):
    """Bad input data, located by file, row and column.

    Parameters
    ----------
    problem : str
        What is wrong, e.g. ``"SD must be > 0, got -1.2"``.
    file, row, column : optional
        Where. ``row`` is the 1-based data row as a spreadsheet user counts it
        (header = row 1, first data row = row 2) when reading a file.
    fix : str, optional
        What to do about it.
    """

    def __init__(self, problem, *, file=None, row=None, column=None, fix=None):
        self.problem, self.file, self.row, self.column, self.fix = problem, file, row, column, fix
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.file is not None:
            where.append(str(self.file))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        msg = (", ".join(where) + ": " if where else "") + self.problem
        if self.fix:
            msg = msg.rstrip(".") + ". " + self.fix
        return msg


class SpecError(BayesMetaError, ValueError):
    """Bad analysis specification (models/*.toml), located by file, line and key."""

    def __init__(self, problem, *, file=None, line=None, key=None, fix=None):
        self.problem, self.file, self.line, self.key, self.fix = problem, file, line, key, fix
        where = []
        if file is not None:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if key is not None:
            where.append(f"key '{key}'")
        msg = (", ".join(where) + ": " if where else "") + problem
        if fix:
            msg = msg.rstrip(".") + ". " + fix
        super().__init__(msg)


class EstimationError(BayesMetaError, RuntimeError):
    """An estimator or sampler could not produce a result."""


class DataWarning(UserWarning):
    """Recoverable oddity in the data; the message says what was done."""


class ConvergenceWarning(UserWarning):
    """An iterative estimator or sampler did not meet its convergence criteria."""
