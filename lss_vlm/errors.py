"""User-facing errors. The CLI prints ``error: <message>`` for these and exits non-zero, no traceback."""


class LssError(Exception):
    """Bad user input (file, field or value), with a message that names the culprit and what was expected."""


class DataError(LssError):
    """A dataset, manifest or image file is missing, corrupt or inconsistent."""


class ConfigError(LssError):
    """A config key or value is unknown or invalid."""


class NotAvailableError(LssError):
    """A feature that this build of the toolkit does not provide (yet)."""
