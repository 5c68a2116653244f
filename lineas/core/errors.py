"""The errors a user can fix. Entry points print them as one line and exit 2; anything else is a bug."""

from __future__ import annotations

import errno


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


def user_error(err: BaseException | None) -> LineasError | None:
    """The :class:`LineasError` behind ``err``, if any (Hydra's ``instantiate`` wraps what a target raises); a
    full disk is one too (the outputs are written beside and renamed, so nothing half-written is left)."""
    while err is not None and not isinstance(err, LineasError):
        if _disk_full(err):
            where = f" writing {err.filename}" if getattr(err, "filename", None) else ""
            return LineasError(f"no space left on the device{where}: free some space and run again ({err})")
        err = err.__cause__
    return err


def _disk_full(err: BaseException) -> bool:
    """An OSError of a full disk or quota, or a library's error that says so (safetensors, torch.save)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or ("requested and" in text and "written" in text)
