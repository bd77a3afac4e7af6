"""Atomic outputs: partial files of a killed writer are recognised by their exact temporary names, never another
target's; files and folders get a plain open's permissions, are flushed to the disk, and the umask is never touched."""

import os
import stat
import warnings

import pytest

from unet.errors import UserError
from unet.io import atomic_path, remove_stale_parts, write_text_atomic


def test_only_the_targets_own_dead_part_files_are_removed(tmp_path):
    names = {
        ".a.tif.2147483646-ab_cd123.part.tif": True,  # a process id that is not running
        ".a.tif.k2j3h4x9.part.tif": True,  # an older unet's name, without a process id
        f".a.tif.{os.getpid()}-abcdefgh.part.tif": False,  # this process is writing it
        ".a.tif.notes.txt": False,  # not a temporary name
        ".a.tiff.k2j3h4x9.part.tiff": False,  # another target
    }
    for name in names:
        (tmp_path / name).write_text("x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert remove_stale_parts(tmp_path / "a") == []  # ".a.tif..." belongs to a.tif, not to a
        removed = remove_stale_parts(tmp_path / "a.tif")
    assert sorted(p.name for p in removed) == sorted(n for n, stale in names.items() if stale)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, stale in names.items() if not stale)
    assert len(caught) == 2 and all("removed a partial output" in str(w.message) for w in caught)
    # a write of the target cleans up too, and its own temporary name carries this process's id
    (tmp_path / ".a.tif.k2j3h4x9.part.tif").write_text("x")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with atomic_path(tmp_path / "a.tif") as tmp:
            assert tmp.name.startswith(f".a.tif.{os.getpid()}-")
            tmp.write_text("done")
    assert not (tmp_path / ".a.tif.k2j3h4x9.part.tif").exists() and (tmp_path / "a.tif").read_text() == "done"


# --------------------------------------------------------------------------- one atomic writer for files and folders


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)  # the test sets it; the code under test must never touch it
    yield
    os.umask(old)


def test_outputs_get_the_permissions_of_a_plain_open_and_mkdir(tmp_path, umask_027, monkeypatch):
    def no_umask(*a):
        raise AssertionError("os.umask called: it changes the umask of every thread for a moment")

    monkeypatch.setattr(os, "umask", no_umask)
    with open(tmp_path / "plain.txt", "w") as fh:
        fh.write("x")
    os.mkdir(tmp_path / "plain.zarr")
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    with atomic_path(tmp_path / "b.zarr", folder=True) as tmp:
        (tmp / "chunk").write_text("x")
    write_text_atomic(tmp_path / "c.txt", "x")
    mode = lambda name: stat.S_IMODE((tmp_path / name).stat().st_mode)  # noqa: E731
    assert mode("plain.txt") == 0o640 and mode("plain.zarr") == 0o750  # what the umask gives
    assert mode("a.txt") == mode("c.txt") == mode("plain.txt") and mode("b.zarr") == mode("plain.zarr")


def test_the_file_is_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "a.tif"
    with atomic_path(target) as tmp:
        tmp.write_text("x")
    assert events == [("fsync", str(tmp)), ("replace", str(target)), ("fsync", str(tmp_path))]
    events.clear()
    with atomic_path(tmp_path / "s.zarr", folder=True) as tmp:
        (tmp / "0.0").write_text("x")
    assert events == [("fsync", str(tmp / "0.0")), ("fsync", str(tmp)), ("replace", str(tmp_path / "s.zarr")),
                      ("fsync", str(tmp_path))]


def test_folder_outputs_are_atomic_and_never_replaced_silently(tmp_path):
    target = tmp_path / "out.zarr"
    with pytest.raises(RuntimeError):
        with atomic_path(target, folder=True) as tmp:
            assert tmp.is_dir() and tmp.name.startswith(f".out.zarr.{os.getpid()}-") and tmp.parent == tmp_path
            (tmp / "half").write_text("x")
            raise RuntimeError("killed half-way")
    assert os.listdir(tmp_path) == []  # neither the target nor the temporary
    with atomic_path(target, folder=True) as tmp:
        (tmp / "old").write_text("old")
    with pytest.raises(UserError, match="already exists"):
        with atomic_path(target, folder=True):
            pass
    assert os.listdir(target) == ["old"]
    with atomic_path(target, folder=True, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert os.listdir(target) == ["new"] and os.listdir(tmp_path) == ["out.zarr"]
    # a folder left by a killed writer is removed, with one line, by the next writer of the same target
    stale = tmp_path / ".out.zarr.2147483646-abcd1234.part"
    (stale / "x").mkdir(parents=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with atomic_path(target, folder=True, overwrite=True):
            pass
    assert not stale.exists() and len(caught) == 1 and "removed a partial output" in str(caught[0].message)
