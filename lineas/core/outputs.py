"""The outputs a command writes, guarded: nothing a user types may destroy files lineas did not write.

An :class:`Output` is claimed before any work starts: it is checked (see :meth:`Output.check`), then locked
(``fcntl.flock`` on ``.NAME.lock`` beside it: of concurrent claims exactly one wins, and a process that dies
releases its lock with it), checked again under the lock, and written beside and renamed. Every folder lineas
writes carries :data:`MARKER`; ``overwrite`` replaces only a folder that carries it, never the current folder,
a parent of it, a repository, or what the command reads.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from lineas.core.errors import OutputBusyError, OutputExistsError
from lineas.core.files import MAPS_CONFIG, MAPS_WEIGHTS, atomic_dir, write_json

MARKER = ".lineas_output.json"  # in every folder lineas writes: {"kind": "run" | "export" | ...}
INTERRUPTED = (130, 143)  # exit statuses of a fit stopped by SIGINT / SIGTERM with its checkpoint saved


def mark(folder: str | os.PathLike, kind: str) -> None:
    """Write the marker that lets ``overwrite`` replace ``folder`` later."""
    write_json(Path(folder) / MARKER, {"kind": kind})


def marked_kind(folder: str | os.PathLike) -> str | None:
    """The kind recorded in ``folder``'s marker, or None if lineas did not write the folder."""
    try:
        return json.loads((Path(folder) / MARKER).read_text())["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def within(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether path ``a`` is ``b`` or lies inside it (both resolved)."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or b in a.parents


class Output:
    """One output (a folder, or a file with ``ours``) of one command.

    ``reads``: paths the command reads (maps, a checkpoint): the output may neither hold nor lie in them.
    ``startup``: names that do not count as results (what a run writes before it starts: Hydra's record).
    ``continues``: the command continues the folder's own run (``resume=`` of its checkpoint): kept as it is.
    ``in_place``: the command writes into the folder as it goes (a fit); an existing folder it replaces is moved
    aside when the claim is entered, removed when the command ends well and put back when it fails.
    ``ours``: for a file output, whether an existing file is one lineas wrote (so ``overwrite`` may replace it).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        kind: str,
        *,
        overwrite: bool = False,
        reads: Iterable[str | os.PathLike | None] = (),
        what: str = "output_dir",
        startup: Iterable[str] = (),
        continues: bool = False,
        in_place: bool = False,
        ours: Callable[[Path], bool] | None = None,
        hint: str = "",
    ) -> None:
        self.path, self.kind, self.overwrite, self.what = Path(path), kind, overwrite, what
        self.reads = [Path(r) for r in reads if r is not None]
        self.startup = {*startup, MARKER}
        self.continues, self.in_place, self.ours, self.hint = continues, in_place, ours, hint
        self._lock: tuple[int, Path] | None = None
        self._aside: Path | None = None
        self._created = False
        self.done = False

    # --- checks ---------------------------------------------------------------------------------------------
    def _refuse(self, why: str) -> OutputExistsError:
        return OutputExistsError(f"{self.what}={self.path} {why}")

    def results(self) -> list[str]:
        """The names in the folder that a command wrote as results (not its start-up files)."""
        if not self.path.is_dir():
            return []
        return sorted(n for n in os.listdir(self.path) if n not in self.startup and not n.endswith(".lock"))

    def check(self) -> bool:
        """Refuse an output that may not be written (one line); True if an existing one will be replaced."""
        where, cwd = self.path.resolve(), Path.cwd().resolve()
        for read in [] if self.continues else self.reads:
            if within(where, read) or within(read, where):
                raise self._refuse(f"overlaps {read}, which this command reads: choose another {self.what}")
        for parent in where.parents:
            if (parent / MAPS_CONFIG).is_file() and (parent / MAPS_WEIGHTS).is_file():
                raise self._refuse(f"lies inside the maps folder {parent}, which is replaced when they are rewritten")
        if self.ours is None and within(cwd, where):
            raise self._refuse(f"is the current folder or holds it: name a new folder for the {self.kind}")
        if not (self.path.exists() or self.path.is_symlink()):
            return False
        if self.ours is not None:
            return self._check_file()
        if not self.path.is_dir():
            raise self._refuse(f"is a file, not a folder: choose another {self.what}")
        if not self.results() or self.continues:
            return False
        if not self.overwrite:
            held = ", ".join(self.results()[:6])
            raise self._refuse(
                f"holds files already ({held}): {self.hint or 'choose a new one'}, or replace it with overwrite=true"
            )
        if (self.path / ".git").exists():
            raise self._refuse("is a repository (it holds .git): overwrite never replaces one")
        if marked_kind(self.path) is None:
            raise self._refuse(
                f"was not written by lineas (no {MARKER}), so overwrite=true does not replace it: "
                f"remove it yourself or choose another {self.what}"
            )
        return True

    def _check_file(self) -> bool:
        if self.path.is_dir():
            raise self._refuse(f"is a folder, not a file: choose another {self.what}")
        if not self.overwrite:
            raise self._refuse(f"exists: choose another {self.what}, or replace it with overwrite=true")
        if not self.ours(self.path):
            raise self._refuse("is not a file lineas wrote, so overwrite=true does not replace it")
        return True

    # --- the claim ------------------------------------------------------------------------------------------
    def __enter__(self) -> Output:
        self.check()  # first without side effects: a refused command creates nothing
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire(self.path)
        try:
            replacing = self.check()
            if self.in_place:
                if replacing:
                    self._aside = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.replaced.", dir=self.path.parent))
                    os.replace(self.path, self._aside / self.path.name)
                self._created = not self.path.exists()
                self.path.mkdir(exist_ok=True)
                mark(self.path, self.kind)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, kind: Any, err: Any, tb: Any) -> None:
        try:
            kept = (0, None, *INTERRUPTED)  # a stopped fit's new folder holds its checkpoint: it is kept
            failed = kind is not None and not (isinstance(err, SystemExit) and err.code in kept)
            if self.in_place and failed and not self.done:
                self._undo()
            elif self._aside is not None:
                shutil.rmtree(self._aside, ignore_errors=True)
        finally:
            self._release()

    def _undo(self) -> None:
        """After a failure: put back the folder that was replaced, or remove a new one that holds nothing to
        resume from (no checkpoint)."""
        if self._aside is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            os.replace(self._aside / self.path.name, self.path)
            os.rmdir(self._aside)
        elif self._created and not any(self.path.glob("**/*.ckpt")):
            shutil.rmtree(self.path, ignore_errors=True)

    def _release(self) -> None:
        if self._lock is not None:
            fd, lock = self._lock
            lock.unlink(missing_ok=True)
            os.close(fd)
            self._lock = None

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """A temporary folder that becomes the output (marked) if the block succeeds."""
        with atomic_dir(self.path, overwrite=True) as tmp:
            yield tmp
            mark(tmp, self.kind)


def _acquire(path: Path) -> tuple[int, Path]:
    """Lock ``.NAME.lock`` beside ``path`` (exclusive, not waiting); the lock dies with its process."""
    lock = path.parent / f".{path.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise OutputBusyError(
                f"{path} is being written by another lineas process{f' (pid {holder})' if holder else ''}: "
                "wait for it to end, or choose another output"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not a lock file its last holder just removed
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd, lock
        os.close(fd)
