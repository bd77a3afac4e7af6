"""Reading and writing images and files safely.

Every output of this project goes through :func:`atomic_path`: data are written
to a temporary file beside the target and renamed into place only when
complete, so an interrupted run never leaves a half-written result, and an
existing result is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from unet.errors import InputFileError, OutputFileError, UserError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".bmp")


#: temporary names: ``.NAME.PID-RANDOM.part.SUFFIX`` beside the target (PID: the writing process)
PART_MARK = ".part"


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
    import shutil

    from unet.errors import warn

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    # exactly the names mkstemp/mkdtemp give: 8 characters of [a-z0-9_], after "PID-" (older unet: without)
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


@contextlib.contextmanager
def atomic_path(path, *, overwrite: bool = False):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    Partial files of ``path`` left by a killed run are removed first
    (:func:`remove_stale_parts`).

    Parameters
    ----------
    path : str or Path
        Final location.
    overwrite : bool, optional
        Replace an existing file.  Without it, an existing ``path`` raises
        :class:`UserError` before anything is written.

    Raises
    ------
    OutputFileError
        ``path`` is a folder, or the file cannot be written (no permission, disk full).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputFileError(path, "is a folder; give a file name")
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists (pass --overwrite / overwrite=True to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(path)
        fd, tmp = tempfile.mkstemp(prefix=part_prefix(path), suffix=PART_MARK + "".join(path.suffixes[-1:]),
                                   dir=parent)
    except OSError as err:
        raise OutputFileError(path, f"cannot write here ({err.strerror or err})") from err
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600; give the result the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except OutputFileError:
        raise
    except OSError as err:  # a full disk, a quota: name the output, not the temporary file
        raise OutputFileError(path, f"cannot write ({err.strerror or err})") from err
    finally:
        if tmp.exists():
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
            import tifffile

            arr = tifffile.imread(path)
        elif suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".png", ".jpg", ".jpeg", ".bmp"):
            import skimage.io

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
            import tifffile

            tifffile.imwrite(tmp, array, compression=compression)
        elif suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, array)
        elif suffix == ".png":
            import skimage.io

            skimage.io.imsave(tmp, array, check_contrast=False)
        else:
            raise UserError(f"{path}: unsupported output type {suffix!r} (use .tif, .png or .npy)")
    return path
