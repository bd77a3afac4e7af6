"""How often the CPU's bfloat16 convolution backward returns a non-finite weight gradient.

Found when the phc-u373 experiment test (tiny FCN-8s: fc6 a 7x7 convolution over a 2x2 pool5) ended
with NaN in fc6.weight after a finite loss. The trainer skips such a step (unet.training.trainer,
``_skip_step``); this probe measures the bug itself, outside the trainer, on finite random inputs.

    python scripts/probe_bf16_nan_gradient.py [--repeats 300]
"""

import argparse
import itertools

import torch

# (in channels, out channels, kernel, input size): FCN-8s's fc6 in the tiny test and in the CPU profile
# (380 px tiles: pool5 about 12 px), a U-Net 3x3 convolution of the CPU profile
SHAPES = [(128, 8, 7, 2), (128, 128, 7, 2), (128, 128, 7, 12), (16, 16, 3, 64)]


def probe(cin, cout, k, size, *, bf16: bool, repeats: int) -> int:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2).to(memory_format=torch.channels_last)
    bad = 0
    for _ in range(repeats):
        x = torch.randn(1, cin, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = conv(x)
        y.float().sum().backward()
        bad += int(not torch.isfinite(conv.weight.grad).all())
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} backward passes each")
    print("| conv (in, out, kernel, input px) | precision | non-finite weight gradients |")
    print("|---|---|---|")
    for (cin, cout, k, size), bf16 in itertools.product(SHAPES, (True, False)):
        bad = probe(cin, cout, k, size, bf16=bf16, repeats=args.repeats)
        print(f"| {cin}, {cout}, {k}x{k}, {size}x{size} | {'bfloat16' if bf16 else 'float32'} | {bad} of {args.repeats} |",
              flush=True)


if __name__ == "__main__":
    main()
