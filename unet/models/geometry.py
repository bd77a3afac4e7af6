"""Geometry of valid (unpadded) networks: output size, halo, valid input sizes.

With unpadded 3x3 convolutions every convolution loses one pixel per side and
every 2x2 max-pooling needs an even size (paper Sec. 3: "it is important to
select the input tile size such that all 2x2 max-pooling operations are applied
to a layer with an even x- and y-size").  For a U-Net of depth ``D`` (number of
poolings) with two convolutions per level, the valid input sizes are

    s(m) = 2**D * m + 4 * (2**D - 1),  m >= 5 (size at the bottom, before its convolutions)

with output ``2**D * (m - 4) - 4 * (2**D - 1)``, and the halo (context lost per side) is ``2 * (3 * 2**D - 2)``: 92 px for the
paper's network (572 -> 388).

Every function takes the model (or anything with ``depth`` and ``padding``
attributes) and a size: an int or a tuple of ints, one per spatial axis.
``"same"``-padded networks and the FCN accept any size and lose no context.
"""

from __future__ import annotations

from typing import Sequence, Union

Size = Union[int, Sequence[int]]

#: unpadded 3x3 convolutions per level (paper Fig. 1)
CONVS_PER_LEVEL = 2
_LOSS_PER_CONV = 2  # a 3x3 valid convolution removes one pixel on each side


def _is_valid_net(model) -> bool:
    return getattr(model, "padding", "same") == "valid"


def _per_axis(fn, size):
    if isinstance(size, int):
        return fn(size)
    return tuple(fn(int(s)) for s in size)


def _output_1d(depth: int, s: int) -> int | None:
    """Output size for input ``s`` along one axis, or None if ``s`` is invalid."""
    block = CONVS_PER_LEVEL * _LOSS_PER_CONV
    for _ in range(depth):
        s -= block
        if s < 2 or s % 2:
            return None
        s //= 2
    s -= block
    if s < 1:
        return None
    for _ in range(depth):
        s = 2 * s - block
        if s < 1:
            return None
    return s


def output_size(model, input_size: Size) -> Size:
    """Size of the network output for ``input_size``.

    Raises
    ------
    ValueError
        If the input size is not valid (see :func:`check_input_size`).
    """
    if not _is_valid_net(model):
        return input_size if isinstance(input_size, int) else tuple(input_size)
    check_input_size(model, input_size)
    return _per_axis(lambda s: _output_1d(model.depth, s), input_size)


def halo(model) -> int:
    """Context lost per side by a valid network: (input - output) / 2.

    92 for the paper's U-Net (572 -> 388, Fig. 1); 0 for same-padded networks.
    """
    if not _is_valid_net(model):
        return 0
    d = model.depth
    return 2 * (3 * 2**d - 2)


def _valid_1d(depth: int, m: int) -> int:
    return 2**depth * m + CONVS_PER_LEVEL * _LOSS_PER_CONV * (2**depth - 1)


def _m_min(depth: int) -> int:
    # the bottom block's two convolutions must leave at least one pixel, and every
    # level of the expanding path must stay positive
    m = 1
    while _output_1d(depth, _valid_1d(depth, m)) is None:
        m += 1
    return m


def is_valid_input_size(model, input_size: Size) -> bool:
    """True if every max-pooling sees an even size and no layer becomes empty."""
    if not _is_valid_net(model):
        return True
    sizes = [input_size] if isinstance(input_size, int) else list(input_size)
    return all(_output_1d(model.depth, int(s)) is not None for s in sizes)


def nearest_valid_input_sizes(model, size: int) -> tuple[int | None, int]:
    """The largest valid size <= ``size`` (None if there is none) and the smallest >= ``size``."""
    if not _is_valid_net(model):
        return size, size
    d = model.depth
    m0 = _m_min(d)
    step, offset = 2**d, CONVS_PER_LEVEL * _LOSS_PER_CONV * (2**d - 1)
    m_lo = (size - offset) // step
    lower = _valid_1d(d, m_lo) if m_lo >= m0 else None
    m_hi = max(m0, -(-(size - offset) // step))
    return lower, _valid_1d(d, m_hi)


def check_input_size(model, input_size: Size) -> None:
    """Raise ValueError naming the nearest valid sizes if ``input_size`` is invalid."""
    if is_valid_input_size(model, input_size):
        return
    sizes = [input_size] if isinstance(input_size, int) else list(input_size)
    parts = []
    for s in dict.fromkeys(int(s) for s in sizes):
        if _output_1d(model.depth, s) is None:
            lo, hi = nearest_valid_input_sizes(model, s)
            near = f"{lo} or {hi}" if lo is not None else f"at least {hi}"
            parts.append(f"{s} (nearest valid: {near})")
    raise ValueError(
        f"invalid input size {tuple(sizes) if len(sizes) > 1 else sizes[0]} for a valid-padded U-Net of depth "
        f"{model.depth}: every 2x2 max-pooling needs an even size; invalid: {', '.join(parts)}"
    )


def input_size_for_output(model, output: int) -> int:
    """Smallest valid input size whose output is at least ``output`` pixels (one axis)."""
    if not _is_valid_net(model):
        return output
    lo, hi = nearest_valid_input_sizes(model, output + 2 * halo(model))
    return hi
