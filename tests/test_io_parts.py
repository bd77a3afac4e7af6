"""Partial files of a killed writer are recognised by their exact temporary names, never another target's."""

import os
import warnings

from unet.io import atomic_path, remove_stale_parts


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
