"""Choosing the image pairs of a run: the dataset a config names, and the slices or name patterns of it.

The trainer (``data.train``, ``data.val``), the paper's experiments (folds,
:mod:`unet.reproduce`) and ``unet demo`` choose images the same way, here.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from unet.data.loaders import dataset_pairs
from unet.errors import ConfigError, UserError


def select_pairs(pairs: list, spec, *, what: str) -> list:
    """Pick image pairs: ``"a:b"`` slices the (sorted) list, a list of patterns matches names.

    ``None``, ``""`` or ``"none"`` pick nothing, ``"all"`` everything; ``what``
    names the config key (``data.<what>``) in errors.
    """
    if spec in (None, "", "none"):
        return []
    if spec == "all":
        return list(pairs)
    if isinstance(spec, str) and ":" in spec and not any(c in spec for c in "*?/"):
        try:
            a, b = (int(x) if x.strip() else None for x in spec.split(":"))
        except ValueError:
            raise ConfigError(f"data.{what}: bad slice {spec!r}; use e.g. '0:20'") from None
        chosen = pairs[a:b]
    else:
        patterns = [spec] if isinstance(spec, str) else [str(p) for p in spec]
        chosen = [p for p in pairs if any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
    if not chosen:
        names = ", ".join(p.name for p in pairs[:6]) + (" ..." if len(pairs) > 6 else "")
        raise ConfigError(f"data.{what}={spec!r} selects no image (available: {names})")
    return chosen


def resolve_path(cfg, p: str) -> Path:
    """A data path from the config: absolute, else relative to the config file, else to the working dir."""
    path = Path(p).expanduser()
    if path.is_absolute():
        return path
    if cfg.base_dir and (Path(cfg.base_dir) / path).exists():
        return (Path(cfg.base_dir) / path).resolve()
    return path.resolve()


def config_pairs(cfg) -> list:
    """The image pairs of the dataset a config (:class:`unet.training.config.Config`) names.

    A missing folder is a clear error.
    """
    root = resolve_path(cfg, cfg.data.root)
    if not root.exists():
        raise UserError(f"{root}: data folder not found (data.root={cfg.data.root!r}; "
                        f"see `unet data fetch {cfg.data.dataset} --dest DIR`)")
    kw = {}
    if cfg.data.dataset == "folder":
        kw = {"images_dir": root / cfg.data.images, "masks_dir": root / cfg.data.masks}
    try:
        return dataset_pairs(cfg.data.dataset, root, **kw)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"{root}: {err}") from err
