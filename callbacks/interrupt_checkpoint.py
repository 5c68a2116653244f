"""A resumable checkpoint when a fit is stopped by SIGTERM or SIGINT (Ctrl-C)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


class InterruptCheckpoint(L.Callback):
    """Saves ``path`` when a signal stops the fit, at the end of an optimizer step (where the state is whole).

    SIGTERM is Lightning's: it stops the loop after the current step. A first SIGINT is made to do the same
    (a second one interrupts at once, without a checkpoint). ``signum`` is the signal that stopped the fit.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self._previous: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, lambda signum, frame: self._stop(trainer, signum))

    def _stop(self, trainer: L.Trainer, signum: int) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once
        self.signum = signum
        trainer._signal_connector.received_sigterm = True  # the loops stop after the current step

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.signum = self.signum or signal.SIGTERM
            trainer.save_checkpoint(self.path)
        self._restore()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
