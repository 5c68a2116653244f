"""Atomic writes: nothing half-written is left, and the files' modes follow the umask."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from lineas.core.errors import OutputExistsError
from lineas.core.files import atomic_dir, write_json


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_dir_modes_follow_the_umask_even_for_files_written_by_libraries(tmp_path, umask_022):
    with atomic_dir(tmp_path / "maps") as tmp:
        save_file({"x": torch.zeros(2)}, tmp / "maps.safetensors")  # safetensors writes through a 0600 temp file
        os.chmod(tmp / "maps.safetensors", 0o600)  # as safetensors leaves it on some versions
        (tmp / "sub").mkdir(mode=0o700)
    assert mode(tmp_path / "maps") == 0o755 and mode(tmp_path / "maps" / "sub") == 0o755
    assert mode(tmp_path / "maps" / "maps.safetensors") == 0o644
    assert mode(write_json(tmp_path / "a.json", {})) == 0o644


def test_atomic_dir_leaves_nothing_when_the_block_fails_and_refuses_to_replace_unasked(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputExistsError, match="overwrite=true"), atomic_dir(tmp_path / "out", overwrite=False):
        pass
