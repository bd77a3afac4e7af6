"""Which images train and which test, per fold; and the guard against test leakage."""

from __future__ import annotations

from dataclasses import dataclass

from unet.data.selection import select_pairs
from unet.errors import UserError


@dataclass(frozen=True)
class Fold:
    """One train/test split; ``train`` and ``test`` are image names (``ImagePair.name``)."""

    name: str
    train: tuple
    test: tuple
    description: str = ""


def contiguous_folds(n: int, k: int) -> list[tuple[list[int], list[int]]]:
    """``k`` folds of contiguous indices over ``range(n)``: ``[(train, test), ...]``.

    Test blocks are contiguous (for ISBI 2012: 10 neighbouring slices of the
    serial-section stack each), disjoint and together cover every index; the
    training part of a fold is everything else.  Neighbouring EM slices are
    strongly correlated, so random folds would leak; contiguous blocks keep the
    held-out slices as far from the training ones as the stack allows.

    Raises
    ------
    ValueError
        If ``n`` is not a multiple of ``k`` (folds of unequal size would make
        their errors incomparable) or ``k < 2``.
    """
    if k < 2 or n < k or n % k:
        raise ValueError(f"cannot split {n} images into {k} equal contiguous folds")
    size = n // k
    out = []
    for i in range(k):
        test = list(range(i * size, (i + 1) * size))
        train = [j for j in range(n) if not i * size <= j < (i + 1) * size]
        out.append((train, test))
    return out


def resolve_folds(spec, pairs) -> list[Fold]:
    """Folds of an experiment (``folds:`` in its YAML) over the dataset's sorted ``pairs``.

    ``{"contiguous": k}`` -> :func:`contiguous_folds`; a list of
    ``{name, train, test}`` -> each ``train``/``test`` selected with
    :func:`unet.data.selection.select_pairs` (a slice ``"a:b"`` or name patterns).
    """
    names = [p.name for p in pairs]
    folds = []
    if isinstance(spec, dict):
        for i, (tr, te) in enumerate(contiguous_folds(len(names), spec["contiguous"])):
            folds.append(Fold(name=f"fold{i + 1}", train=tuple(names[j] for j in tr), test=tuple(names[j] for j in te),
                              description=f"test {names[te[0]]}..{names[te[-1]]} ({len(te)} images), "
                                          f"train the other {len(tr)}"))
    else:
        for f in spec:
            tr = [p.name for p in select_pairs(pairs, f["train"], what="train")]
            te = [p.name for p in select_pairs(pairs, f["test"], what="test")]
            folds.append(Fold(name=str(f["name"]), train=tuple(tr), test=tuple(te),
                              description=f"train {f['train']} ({len(tr)} images), test {f['test']} ({len(te)} images)"))
    for f in folds:
        check_no_leak(f.train, f.test)
    return folds


def select_folds(folds: list[Fold], wanted) -> list[Fold]:
    """Folds picked by ``--folds``: 1-based indices or names, e.g. ``"1,2"`` or ``"01->02"``."""
    if not wanted:
        return folds
    items = [w.strip() for w in (wanted.split(",") if isinstance(wanted, str) else wanted) if str(w).strip()]
    chosen = []
    for w in items:
        w = str(w)
        match = [f for f in folds if f.name == w]
        if not match and w.isdigit() and 1 <= int(w) <= len(folds):
            match = [folds[int(w) - 1]]
        if not match:
            raise UserError(f"--folds {w!r}: no such fold (folds: {', '.join(f.name for f in folds)}, or 1..{len(folds)})")
        if match[0] not in chosen:
            chosen.append(match[0])
    return chosen


def check_no_leak(train, test, val=None, *, validation=None) -> None:
    """Refuse a fold whose test images reach training in any way.

    Parameters
    ----------
    train, test : sequence of str
        Image names.
    val : str or list, optional
        The trainer's ``data.val``; inside a fold it must be ``"none"`` so that
        no held-out image can choose a checkpoint (``best.pt``) or anything else.
    validation : sequence of str, optional
        Images of nested selection (:func:`carve_validation`): they must be
        some of ``train``, so that no held-out image chooses a setting either.
    """
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise UserError(f"fold leaks test images into training: {', '.join(overlap[:5])}")
    if validation is not None:
        outside = sorted(set(validation) - set(train))
        if outside:
            raise UserError(f"validation images must be training images of the fold; not: {', '.join(outside[:5])}"
                            + (" (held out!)" if set(outside) & set(test) else ""))
        if not validation:
            raise UserError("nested selection has no validation image")
    if not test:
        raise UserError("fold has no test image")
    if not train:
        raise UserError("fold has no training image")
    if val is not None and val not in ("none", None, ""):
        raise UserError(f"data.val={val!r}: inside a reproduction fold the trainer must not validate on any image "
                        "(the held-out fold is evaluated once, at the end); do not --set data.val")


def carve_validation(fold: Fold, count: int, *, pick: str = "last") -> Fold:
    """The search split of nested selection: validation images carved from ``fold``'s training images.

    Parameters
    ----------
    fold : Fold
        The outer fold; its test images are never touched.
    count : int
        Number of validation images (fewer than the training images).
    pick : {"last", "spread"}
        ``"last"``: the last ``count`` training images in order (a contiguous
        block: neighbouring EM slices and time-lapse frames are correlated, so
        a block is the more honest validation set); ``"spread"``: evenly spaced.

    Returns
    -------
    Fold
        ``train``: the fold's training images minus the validation ones;
        ``test``: the validation images.  Checked with :func:`check_no_leak`.
    """
    train = list(fold.train)
    if not 1 <= count < len(train):
        raise UserError(f"fold {fold.name}: cannot carve {count} validation images from {len(train)} training images")
    if pick == "last":
        val = train[-count:]
    elif pick == "spread":
        step = len(train) / count
        val = [train[int(step * (i + 0.5))] for i in range(count)]
    else:
        raise UserError(f"selection.pick must be 'last' or 'spread', got {pick!r}")
    check_no_leak(fold.train, fold.test, validation=val)
    rest = [n for n in train if n not in val]
    check_no_leak(rest, val)
    check_no_leak(rest, fold.test)
    return Fold(name=f"{fold.name}-search", train=tuple(rest), test=tuple(val),
                description=f"validation {', '.join(val)} ({len(val)} of the fold's {len(train)} training images), "
                            f"search trainings on the other {len(rest)}")

