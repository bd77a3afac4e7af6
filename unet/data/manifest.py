"""Dataset manifests (``datasets/NAME.yaml``): download, verify, unpack (pooch), check.

A manifest records where a dataset comes from (official URLs and SHA-256),
its layout, label convention, pixel size, citation and terms of use; see
``datasets/README.md`` for the schema.  :func:`fetch` downloads into a
temporary folder beside the destination (:func:`unet.io.atomic_path`) and renames it into place only when
every file is downloaded, verified and unpacked, so an interrupted or offline
run leaves nothing half-written.  :func:`check` validates a local copy.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pooch
import yaml

from unet.data.loaders import _read_page, ctc_pairs, folder_pairs, isbi2012_pairs, labels_from_mask
from unet.errors import InputFileError, UserError
from unet.io import atomic_path
from unet.resources import MANIFEST_DIR  # unet/datasets (the repository's datasets/), shipped in the wheel

def list_manifests() -> list[str]:
    return sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml") if p.stem != "template")


def load_manifest(name) -> dict:
    """The manifest of dataset ``name`` (``datasets/NAME.yaml``) or of a YAML file path."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        path = MANIFEST_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(list_manifests())} "
                        f"(or give the path of a manifest .yaml)")
    try:
        manifest = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputFileError(path, f"invalid YAML ({err})") from err
    if not isinstance(manifest, dict) or "name" not in manifest:
        raise InputFileError(path, "not a dataset manifest (no 'name')")
    manifest.setdefault("downloads", [])
    manifest.setdefault("known_files", {})
    manifest.setdefault("partial_frames", [])
    manifest["_path"] = str(path)
    return manifest


# ----------------------------------------------------------------------------- fetch


def sha256_of(path) -> str:
    return pooch.file_hash(str(path), alg="sha256")


def _copy_local(url: str, output_file, _pooch=None) -> None:
    """A pooch downloader for ``file://`` URLs (a local mirror), which pooch has no downloader for."""
    shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(url).path), output_file)


@contextlib.contextmanager
def _quiet_pooch():
    """pooch logs every download and unzip at INFO; ``unet data fetch`` prints its own lines."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def download(url: str, dest: Path, *, sha256: str | None = None, timeout: float = 60.0,
             progress: bool = False) -> None:
    """Download ``url`` into ``dest`` with pooch, checking its SHA-256 when the manifest knows it.

    Raises
    ------
    UserError
        The download failed (offline, refused, timed out) or its SHA-256 differs from ``sha256``;
        nothing is left at ``dest``.
    """
    scheme = urllib.parse.urlparse(url).scheme
    downloader = (_copy_local if scheme == "file" else  # others (ftp, doi): pooch's choice
                  pooch.HTTPDownloader(progressbar=progress, timeout=timeout) if scheme in ("http", "https") else None)
    try:
        with _quiet_pooch():
            pooch.retrieve(url, known_hash=f"sha256:{sha256}" if sha256 else None, fname=dest.name,
                           path=dest.parent, downloader=downloader, progressbar=progress)
    except ValueError as err:
        got = re.search(r"but got ([0-9a-f]{64})", str(err))
        if not got:  # not a checksum mismatch: an unsupported URL
            raise UserError(f"cannot download {url}: {err}") from err
        raise UserError(f"{url}: SHA-256 mismatch (got {got.group(1)}, manifest says {sha256}); "
                        f"the download is corrupt or the file changed upstream") from err
    except OSError as err:  # requests' errors are OSErrors: no network, refused, timed out, HTTP 404
        raise UserError(f"cannot download {url}: {_reason(err)} (offline? no network access? "
                        f"download it by hand and run `unet data check`)") from err


def _reason(err: OSError) -> str:
    """The cause of a download error in a few words (requests wraps urllib3's in a long text)."""
    text = str(err)
    errno_text = re.search(r"\[Errno -?\d+\] [^\"'()]+", text)
    return errno_text.group(0).strip() if errno_text else (text.splitlines() or [type(err).__name__])[0]


def _unzip(archive: Path, into: Path) -> None:
    """Unpack ``archive`` into ``into`` with pooch, refusing members whose path leaves the folder.

    The check is ours: pooch's Unzip (``zipfile.extractall``) silently rewrites such names, and an
    archive that tries it is not one to trust.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            root = into.resolve()
            for member in zf.infolist():
                target = (into / member.filename).resolve()
                if root != target and root not in target.parents:
                    raise InputFileError(archive, f"unsafe path in archive: {member.filename!r}")
        with _quiet_pooch():
            pooch.Unzip(extract_dir=str(into))(str(archive), "download", None)
    except zipfile.BadZipFile as err:
        raise InputFileError(archive, f"not a valid zip archive ({err})") from err


def _downloads(manifest: dict, *, verify: bool) -> list[dict]:
    """The manifest's downloads, refused when empty, a name is not plain or (``verify``) a SHA-256 is unknown."""
    downloads = manifest.get("downloads") or []
    if not downloads:
        raise UserError(f"dataset {manifest['name']!r} has no downloads in its manifest")
    for d in downloads:
        if "/" in d["file"] or d["file"].startswith("."):
            raise UserError(f"manifest file name {d['file']!r} must be a plain name")
    unknown = [d["file"] for d in downloads if not d.get("sha256")]
    if verify and unknown:
        raise UserError(
            f"no published SHA-256 for {', '.join(unknown)} in {manifest.get('_path', manifest['name'])}: "
            f"cannot verify the download; pass --no-verify to fetch anyway (the content is then "
            f"checked with `unet data check`)")
    return downloads


def fetch(name, dest, *, verify: bool = True, progress: bool = False, timeout: float = 60.0,
          overwrite: bool = False) -> Path:
    """Download, verify and unpack dataset ``name`` into folder ``dest`` (pooch does each step).

    ``dest`` must not exist (or be empty) unless ``overwrite``.  Everything goes
    into a temporary folder beside ``dest`` first; only when all downloads are
    complete, their SHA-256 match the manifest and archives are unpacked is it
    renamed to ``dest``.  A download whose manifest SHA-256 is unknown (null) is
    refused unless ``verify=False``; a mismatch is always an error.  There is no
    cache besides ``dest`` itself: a fetched copy is validated by :func:`check`.
    """
    manifest = name if isinstance(name, dict) else load_manifest(name)
    dest = Path(dest)
    downloads = _downloads(manifest, verify=verify)
    nonempty = (dest.is_dir() and any(dest.iterdir())) or (dest.exists() and not dest.is_dir())
    if nonempty and not overwrite:
        raise UserError(f"{dest}: already exists and is not empty (pass --overwrite to replace it)")
    with atomic_path(dest, overwrite=True, folder=True) as tmp:  # an empty dest is replaced too
        for d in downloads:
            target = tmp / d["file"]
            download(d["url"], target, sha256=(d.get("sha256") or "").lower() or None, timeout=timeout,
                     progress=progress)
            if d.get("unpack", "none") == "zip":
                _unzip(target, tmp)
                target.unlink()
    return dest


# ----------------------------------------------------------------------------- check


def dataset_root(manifest: dict, root) -> Path:
    """``root``, or ``root/<manifest root>`` when the archive unpacked into a subfolder."""
    root = Path(root)
    sub = manifest.get("root")
    if sub and (root / sub).is_dir():
        return root / sub
    return root


def check(name, root) -> tuple[list[str], list[str]]:
    """Validate a local copy: counts, shapes, dtypes, label values, known SHA-256.

    Returns
    -------
    (report, problems) : lists of str
        Lines describing what was checked, and the problems found (empty if the copy is good).
    """
    manifest = name if isinstance(name, dict) else load_manifest(name)
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    base = dataset_root(manifest, root)
    try:
        groups = _pair_groups(manifest, base)
    except UserError as err:
        return [], [str(err)]
    report, problems = [], []
    for group, (pairs, spec) in groups.items():
        line, found = _check_group(group, pairs, spec)
        report.append(line)
        problems += found
    line, found = _check_known_files(manifest.get("known_files") or {}, base)
    report += [line] if line else []
    problems += found
    return report, problems


def _pair_groups(manifest: dict, base: Path) -> dict[str, tuple[list, dict]]:
    """The image pairs of each split (ISBI 2012, folder) or sequence (CTC), with its manifest entry."""
    loader = manifest.get("loader", manifest["name"])
    if loader == "isbi2012":
        return {split: (isbi2012_pairs(base, split=split), spec or {})
                for split, spec in (manifest.get("splits") or {}).items()}
    if loader in ("dic-hela", "phc-u373", "ctc"):
        return {str(seq): (ctc_pairs(base, sequences=(str(seq),), partial=()), spec or {})
                for seq, spec in (manifest.get("sequences") or {}).items()}
    if loader == "folder":
        spec = next(iter((manifest.get("splits") or {"all": {}}).values())) or {}
        return {"all": (folder_pairs(base / "images", base / "masks"), spec)}
    raise UserError(f"manifest {manifest['name']!r}: unknown loader {loader!r}")


def _check_group(group: str, pairs: list, spec: dict) -> tuple[str, list[str]]:
    """Count, shapes and dtypes of one split or sequence against its manifest entry: (report line, problems)."""
    problems = []
    n, want = len(pairs), spec.get("count")
    if want is not None and n != want:
        problems.append(f"{group}: {n} image(s), expected {want}")
    seen = {"image_shape": set(), "image_dtype": set(), "mask_dtype": set()}
    for p in pairs:
        problems += _check_pair(p, spec, seen)
    for key, label in (("image_shape", "image shape"), ("image_dtype", "image dtype"), ("mask_dtype", "mask dtype")):
        want = spec.get(key)
        if want is None:
            continue
        want = tuple(want) if isinstance(want, list) else want
        bad = {s for s in seen[key] if s != want}
        if bad:
            problems.append(f"{group}: {label} {sorted(bad)}, expected {want}")
    line = f"{group}: {n} pair(s)" if any(p.mask for p in pairs) else f"{group}: {n} image(s)"
    line += f", shapes {sorted(seen['image_shape'])}, image dtype {sorted(seen['image_dtype'])}"
    if seen["mask_dtype"]:
        line += f", mask dtype {sorted(seen['mask_dtype'])}"
    return line, problems


def _check_pair(p, spec: dict, seen: dict) -> list[str]:
    """Read one image (and mask): record its shape and dtypes in ``seen``; the problems of its mask."""
    try:
        img = _read_page(Path(p.image), p.index)
    except UserError as err:
        return [str(err)]
    seen["image_shape"].add(tuple(img.shape[:2]))
    seen["image_dtype"].add(str(img.dtype))
    if p.mask is None:
        return []
    try:
        mask = _read_page(Path(p.mask), p.index)
        if mask.shape[:2] != img.shape[:2]:
            raise InputFileError(p.mask, f"shape {mask.shape[:2]} differs from its image {img.shape[:2]}")
        seen["mask_dtype"].add(str(mask.dtype))
        values = set(np.unique(mask).tolist())
        allowed = spec.get("label_values")
        if allowed is not None and not values <= set(allowed):
            raise InputFileError(p.mask, f"unexpected label values {sorted(values - set(allowed))[:5]} "
                                 f"(allowed: {allowed})")
        labels_from_mask(mask, kind="binary" if allowed is not None and len(allowed) == 2 else "auto", path=p.mask)
    except UserError as err:
        return [str(err)]
    return []


def _check_known_files(known: dict, base: Path) -> tuple[str | None, list[str]]:
    """SHA-256 of the files the manifest knows that are in this copy: (report line or None, problems)."""
    if not known:
        return None, []
    present = {}
    for rel, digest in known.items():
        found = next((base / c for c in _layout_variants(rel) if (base / c).is_file()), None)
        if found is not None:
            present[found] = digest
    bad = [path for path, digest in present.items() if sha256_of(path) != digest]
    line = (f"known SHA-256: {len(present) - len(bad)}/{len(present)} present files match "
            f"({len(known) - len(present)} of {len(known)} known files not in this copy)")
    if bad:  # named here too, so that the count is never read without the files
        names = [str(p.relative_to(base)) if p.is_relative_to(base) else str(p) for p in bad]
        line += f"; differ: {', '.join(names[:10])}" + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return line, [f"{path}: SHA-256 differs from the manifest's (file changed or corrupt)" for path in bad]


def _layout_variants(rel: str) -> list[str]:
    """``rel`` and its path in the other CTC layout (SEQ/images <-> SEQ, SEQ/masks <-> SEQ_GT/SEG)."""
    parts = rel.split("/")
    out = [rel]
    if len(parts) == 3 and parts[1] == "images":
        out.append(f"{parts[0]}/{parts[2]}")
    elif len(parts) == 3 and parts[1] == "masks":
        out.append(f"{parts[0]}_GT/SEG/{parts[2]}")
    return out
