"""Guarded outputs: what overwrite may replace, what a failed command leaves, and that of concurrent claims on one
output exactly one wins (also when a holder dies)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time

import pytest

from lineas.core.errors import LineasError, OutputBusyError, OutputExistsError
from lineas.core.outputs import MARKER, Output, mark


def snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def lineas_run(path):
    (path / "maps").mkdir(parents=True)
    (path / "maps" / "lineas.json").write_text("{}")
    mark(path, "run")
    return path


def test_overwrite_refuses_a_folder_lineas_did_not_write(tmp_path):
    thesis = tmp_path / "A"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("x")
    with pytest.raises(OutputExistsError, match=rf"not written by lineas \(no {MARKER}\)"):
        with Output(thesis, "run", overwrite=True, in_place=True):
            pass
    assert snapshot(thesis) == {"thesis.tex": hashlib.sha256(b"x").hexdigest()}
    with pytest.raises(OutputExistsError, match="holds files already.*overwrite=true"):
        Output(thesis, "run").check()


@pytest.mark.parametrize("where", ["cwd", "parent", "git"])
def test_never_the_current_folder_a_parent_of_it_or_a_repository(tmp_path, monkeypatch, where):
    run = lineas_run(tmp_path / "run")
    inner = run / "sub"
    inner.mkdir()
    if where == "git":
        (run / ".git").mkdir()
    monkeypatch.chdir({"cwd": run, "parent": inner, "git": tmp_path}[where])
    before = snapshot(run)
    why = "repository" if where == "git" else "is the current folder or holds it"
    with pytest.raises(OutputExistsError, match=why):
        with Output(run, "run", overwrite=True, in_place=True):
            pass
    with pytest.raises(OutputExistsError, match=why):
        with Output(run, "export", overwrite=True) as out, out.writing():
            pass
    assert snapshot(run) == before


def test_never_what_the_command_reads(tmp_path):
    run = lineas_run(tmp_path / "R")
    for target in (run, run / "maps", run / "maps" / "inside"):
        with pytest.raises(OutputExistsError, match="overlaps|inside the maps folder"):
            Output(target, "export", overwrite=True, reads=[run / "maps"]).check()
    (run / "maps" / "maps.safetensors").write_bytes(b"")
    with pytest.raises(OutputExistsError, match="lies inside the maps folder"):
        Output(run / "maps" / "export", "export").check()  # a resume of R would delete it with the maps
    file = tmp_path / "notes.txt"
    file.write_text("keep")
    with pytest.raises(OutputExistsError, match="is a file, not a folder"):
        Output(file, "export", overwrite=True).check()
    assert file.read_text() == "keep"


def test_in_place_replacement_is_undone_when_the_command_fails(tmp_path):
    run = lineas_run(tmp_path / "run")
    before = snapshot(run)
    with pytest.raises(LineasError, match="typo"):
        with Output(run, "run", overwrite=True, in_place=True):
            assert not (run / "maps").exists()  # moved aside while the new run writes
            (run / "train.log").write_text("new")
            raise LineasError("typo")
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no aside, no lock left
    with Output(run, "run", overwrite=True, in_place=True):
        (run / "new.txt").write_text("new")
    assert sorted(p.name for p in run.iterdir()) == [MARKER, "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_fit_stopped_by_a_signal_keeps_its_new_run(tmp_path):
    run = lineas_run(tmp_path / "run")
    with pytest.raises(SystemExit):
        with Output(run, "run", overwrite=True, in_place=True):
            (run / "checkpoints").mkdir()
            raise SystemExit(143)
    assert (run / "checkpoints").is_dir() and not (run / "maps").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_new_folder_of_a_failed_command_is_removed_unless_it_holds_a_checkpoint(tmp_path):
    with pytest.raises(LineasError):
        with Output(tmp_path / "a", "run", in_place=True):
            raise LineasError("bad")
    assert not (tmp_path / "a").exists()
    with pytest.raises(SystemExit):
        with Output(tmp_path / "b", "run", in_place=True):
            (tmp_path / "b" / "checkpoints").mkdir()
            (tmp_path / "b" / "checkpoints" / "last.ckpt").write_bytes(b"x")
            raise SystemExit(143)
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()


def test_startup_files_and_continuing_runs_are_not_refused(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "train.log").write_text("failed before it fitted")
    assert Output(run, "run", startup=[".hydra", "train.log"]).check() is False
    lineas_run(tmp_path / "done")
    assert Output(tmp_path / "done", "run", continues=True).check() is False


def test_file_outputs_are_replaced_only_when_lineas_wrote_them(tmp_path):
    table = tmp_path / "generations.jsonl"
    table.write_text("my notes\n")
    with pytest.raises(OutputExistsError, match="exists.*overwrite=true"):
        Output(table, "generations", what="output", ours=lambda p: True).check()
    with pytest.raises(OutputExistsError, match="not a file lineas wrote"):
        Output(table, "generations", what="output", overwrite=True, ours=lambda p: False).check()
    assert Output(table, "generations", what="output", overwrite=True, ours=lambda p: True).check() is True


def _claim(path, start, results, hold):
    start.wait()
    try:
        with Output(path, "run", in_place=True):
            time.sleep(hold)
            (path / "maps").mkdir()
        results.put("won")
    except OutputBusyError:
        results.put("busy")
    except OutputExistsError:
        results.put("exists")


def test_of_concurrent_claims_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(tmp_path / "run", start, results, 1.0)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes.count("won") == 1, outcomes
    assert set(outcomes) <= {"won", "busy", "exists"}


def _hold_forever(path, ready):
    with Output(path, "run", in_place=True):
        ready.set()
        time.sleep(60)


def test_a_dead_holder_leaves_no_stuck_lock(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(tmp_path / "run", ready))
    holder.start()
    assert ready.wait(30)
    with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
        with Output(tmp_path / "run", "run", in_place=True):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with Output(tmp_path / "run", "run", in_place=True):  # the kernel released the dead process's lock
        pass
