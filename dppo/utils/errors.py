"""The project's own error types that several layers raise or let through (one line, naming the file or key)."""


class DatasetError(ValueError):
    """A dataset or normalisation file that does not have the expected arrays, shapes or values."""
