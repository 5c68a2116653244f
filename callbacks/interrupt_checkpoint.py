"""A resumable checkpoint when a fit is stopped by SIGTERM or SIGINT (Ctrl-C)."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


class InterruptCheckpoint(L.Callback):
    """Stops the fit at the end of an optimizer step (where its state is whole) when SIGTERM or a first SIGINT
    arrives, and saves ``path`` there; a signal that arrives before fitting starts stops it before the first step.

    Signals are noted within :meth:`listening` (a second SIGINT interrupts at once, without a checkpoint);
    ``signum`` is the signal that stopped the fit. Lightning's own SIGTERM handling runs as well.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.signum: int | None = None
        self._trainer: L.Trainer | None = None

    @contextmanager
    def listening(self) -> Iterator[None]:
        """Within the block, SIGTERM and SIGINT are noted instead of ending the process."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._note) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _note(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C
        self.signum = self.signum or signum
        if self._trainer is not None:
            self._trainer._signal_connector.received_sigterm = True  # the loops stop after the current step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.signum is not None:  # it came while the model loaded
            raise SIGTERMException

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.signum = self.signum or signal.SIGTERM
            trainer.save_checkpoint(self.path, weights_only=False)  # optimizer and loop states: resume is exact
