"""The one exception type users see: the CLI prints its message on one line and exits with 2."""


class AblatrixError(Exception):
    """Bad input (grid file, override, dataset, architecture) found before anything trains."""
