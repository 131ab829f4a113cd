"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""


class PrequentialError(Exception):
    """Base class: anything raised on purpose for bad input or an unusable environment."""


class ConfigError(PrequentialError):
    """A configuration value is missing, of the wrong type or out of range."""


class FormatError(PrequentialError):
    """The input is not a prequential file, or is corrupt or truncated."""


class VersionError(PrequentialError):
    """The file was made by another package or library version."""


class NumericsError(PrequentialError):
    """This machine cannot reproduce the encoder's floats (cores, backend, device, XLA flags)."""


class DesyncError(NumericsError):
    """Decoding diverged from the encoder at a sync point."""
