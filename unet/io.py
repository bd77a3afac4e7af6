"""Reading and writing images and files safely.

Every output of this project, file or folder, goes through :func:`atomic_path`:
data are written to a temporary beside the target, flushed to the disk and
renamed into place only when complete, so an interrupted run never leaves a
half-written result, and an existing result is never replaced unless
``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import skimage.io
import tifffile

from unet.errors import InputFileError, OutputFileError, UserError, warn

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".bmp")


#: temporary names: ``.NAME.PID-RANDOM.part.SUFFIX`` beside the target (PID: the writing process)
PART_MARK = ".part"
#: the 8 characters of a temporary name's RANDOM part (those of :func:`tempfile.mkstemp`)
_PART_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def part_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def remove_stale_parts(path) -> list[Path]:
    """Remove temporary files of ``path`` left by a process that was killed (SIGKILL, power loss).

    A temporary name carries the writer's process id; one whose process no
    longer runs (or from an older unet, without an id) is stale.  A part file of a
    running process (another writer of the same target) is kept.  Each removal is
    reported in one line (:func:`unet.errors.warn`).

    Returns
    -------
    list of Path
        The removed files or folders.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    # exactly the names _create_part (and older unet's mkstemp/mkdtemp) give: 8 characters of
    # [a-z0-9_], after "PID-" (older unet: without)
    own = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)-)?[a-z0-9_]{{8}}{re.escape(PART_MARK)}"
                     rf"(?:{re.escape(''.join(path.suffixes[-1:]))})?")
    removed = []
    try:
        candidates = list(parent.glob(f".{glob.escape(path.name)}.*{PART_MARK}*"))
    except OSError:
        return removed
    for part in candidates:
        match = own.fullmatch(part.name)
        if match is None or _writer_alive(match.group(1)):
            continue
        try:
            shutil.rmtree(part) if part.is_dir() else part.unlink()
        except OSError:
            continue
        removed.append(part)
        warn(f"{part}: removed a partial output left by an interrupted run")
    return removed


def _writer_alive(pid: str | None) -> bool:
    if pid is None:
        return False  # older name without a process id: its writer is long gone
    pid = int(pid)
    if pid == os.getpid():
        return True  # this process: another writer in it (a thread) may be using it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _create_part(path: Path, *, folder: bool) -> Path:
    """Create the temporary file (or folder) of ``path`` beside it, with a plain ``open``'s permissions.

    ``os.open(..., 0o666)`` / ``os.mkdir(..., 0o777)`` let the kernel apply the
    umask (and a folder's default ACL) exactly as ``open(path, "w")`` and
    ``mkdir`` do; ``mkstemp`` would create 0600 and reading the umask means
    setting it, which races with other threads.
    """
    suffix = PART_MARK + ("" if folder else "".join(path.suffixes[-1:]))
    rng = random.SystemRandom()
    for _ in range(100):  # as many tries as mkstemp makes
        tmp = path.parent / (part_prefix(path) + "".join(rng.choice(_PART_CHARS) for _ in range(8)) + suffix)
        try:
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def _fsync_tree(path: Path) -> None:
    """Flush ``path``: a file, or a folder with everything in it."""
    if path.is_dir() and not path.is_symlink():
        for sub in path.iterdir():
            _fsync_tree(sub)
    _fsync(path)


def _fsync(path: Path) -> None:
    """Flush one file, or one folder's list of names, to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF):  # a file system without fsync of folders
            raise
    finally:
        os.close(fd)


def _prepare(path: Path, *, overwrite: bool, folder: bool) -> Path:
    """Refuse an output that exists (without ``overwrite``) or a folder where a file goes; create its temporary."""
    if path.is_dir() and not folder:
        raise OutputFileError(path, "is a folder; give a file name")
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists (pass --overwrite / overwrite=True to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(path)
        return _create_part(path, folder=folder)
    except OSError as err:
        raise OutputFileError(path, f"cannot write here ({err.strerror or err})") from err


def _commit(tmp: Path, path: Path) -> None:
    """Flush ``tmp``, rename it to ``path`` and flush the rename: after a crash, ``path`` is old or complete."""
    _fsync_tree(tmp)
    if tmp.is_dir() and path.exists():  # a folder cannot be renamed over another
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(tmp, path)
    _fsync(path.parent)


@contextlib.contextmanager
def atomic_path(path, *, overwrite: bool = False, folder: bool = False):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The one way this package writes an output (files and zarr folders alike):
    the temporary (named after the target and this process's id) gets the
    permissions a plain ``open``/``mkdir`` would give; it is flushed to the disk
    before the rename and the folder holding it after, so that a crash leaves
    either the old result or the complete new one.  Partial files of ``path``
    left by a killed run are removed first (:func:`remove_stale_parts`); on an
    error the temporary is removed.

    Parameters
    ----------
    path : str or Path
        Final location.
    overwrite : bool, optional
        Replace an existing file.  Without it, an existing ``path`` raises
        :class:`UserError` before anything is written.
    folder : bool, optional
        Yield an empty folder (a zarr store, an unpacked dataset) instead of an empty file.

    Raises
    ------
    OutputFileError
        ``path`` is a folder (for a file), or it cannot be written (no permission, disk full).
    """
    path = Path(path)
    tmp = _prepare(path, overwrite=overwrite, folder=folder)
    try:
        yield tmp
        _commit(tmp, path)
    except OutputFileError:
        raise
    except OSError as err:  # a full disk, a quota: name the output, not the temporary file
        raise OutputFileError(path, f"cannot write ({err.strerror or err})") from err
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path, data: bytes, *, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path, text: str, *, overwrite: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)


def read_image(path) -> np.ndarray:
    """Read a 2-D image or a stack (TIFF, PNG/JPEG/BMP, npy) as a NumPy array.

    Raises
    ------
    InputFileError
        If the file is missing, empty, of an unknown type or cannot be decoded;
        the message names the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "no such file")
    if path.is_dir():
        raise InputFileError(path, "is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise InputFileError(path, "file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            arr = tifffile.imread(path)
        elif suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".png", ".jpg", ".jpeg", ".bmp"):
            arr = skimage.io.imread(path)
        else:
            raise InputFileError(path, f"unknown image type {suffix!r} (expected one of {', '.join(IMAGE_SUFFIXES)})")
    except InputFileError:
        raise
    except Exception as err:  # decoders raise many types; report them uniformly
        raise InputFileError(path, f"cannot read image ({type(err).__name__}: {err})") from err
    if arr.size == 0:
        raise InputFileError(path, "image is empty (0 pixels)")
    return np.asarray(arr)


def write_image(path, array: np.ndarray, *, overwrite: bool = False, compression: str | None = "zlib") -> Path:
    """Write ``array`` atomically as TIFF, PNG or npy (chosen by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path, overwrite=overwrite) as tmp:
        if suffix in (".tif", ".tiff"):
            tifffile.imwrite(tmp, array, compression=compression)
        elif suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, array)
        elif suffix == ".png":
            skimage.io.imsave(tmp, array, check_contrast=False)
        else:
            raise UserError(f"{path}: unsupported output type {suffix!r} (use .tif, .png or .npy)")
    return path
