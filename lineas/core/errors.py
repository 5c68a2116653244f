"""The errors a user can fix. Entry points print them as one line and exit 2; anything else is a bug."""

from __future__ import annotations


class LineasError(Exception):
    """Something the user can fix (a file, a key, a pattern): the message says which and what to do."""


class ConfigError(LineasError, ValueError):
    """A setting that cannot be used (a value, a combination of keys)."""


class SiteError(LineasError, ValueError):
    """A site specification that does not fit the model."""


class MapsFileError(LineasError, ValueError):
    """A maps folder that cannot be read, or maps that do not fit the model they are given."""


class MergeError(LineasError, ValueError):
    """A site whose map cannot be folded into this model's weights."""


class PromptFileError(LineasError, ValueError):
    """A prompt file that cannot be used, with the file named."""


class ModelSourceError(LineasError, ValueError):
    """A model spec that names nothing lineas can load."""


class FitError(LineasError, RuntimeError):
    """A fit that cannot go on (non-finite loss, maps cast to low precision); no maps are written."""


class FitInterrupted(LineasError):
    """A fit stopped by a signal at a safe point, its checkpoint saved; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OutputExistsError(LineasError, FileExistsError):
    """An output path that exists and may not be replaced."""


class OutputBusyError(OutputExistsError):
    """An output another lineas process is writing now."""
