"""EdgefuseError: the one base of every error edgefuse raises for bad input, a bad file or a missing backend.

Each names what was expected and what was got. It subclasses ValueError, so callers that
caught ValueError keep working; the command line catches it and prints the message alone.
"""


class EdgefuseError(ValueError):
    """Bad input, a bad or missing file, a failed check, or a backend that is not installed."""
