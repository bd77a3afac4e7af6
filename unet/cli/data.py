"""``unet data``: fetch, check and show the datasets described in ``datasets/``.

    unet data list
    unet data fetch NAME --dest DIR [--no-verify] [--overwrite]
    unet data check NAME DIR
    unet data show NAME DIR [--index K | --name NAME] [--out FILE.png]

NAME is a manifest name (isbi2012, dic-hela, phc-u373) or the path of a
manifest file (see datasets/template.yaml).
"""

from __future__ import annotations

# unet.data.manifest (pooch, the loaders) and the plotting imports load when a command runs, not for --help
import sys
from pathlib import Path

from unet.errors import UserError


def register(sub):
    p = sub.add_parser("data", help="fetch, check and show datasets (manifests in datasets/)",
                       description="Fetch, check and show the datasets described in datasets/*.yaml.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    q = dsub.add_parser("list", help="list the dataset manifests")
    q.set_defaults(func=run_list)

    q = dsub.add_parser("fetch", help="download, verify and unpack a dataset into DEST")
    q.add_argument("name", help="dataset name (isbi2012, dic-hela, phc-u373) or manifest .yaml")
    q.add_argument("--dest", required=True, help="folder to create (must not exist or be empty)")
    q.add_argument("--no-verify", action="store_true",
                   help="accept downloads whose SHA-256 the manifest does not know (the content is checked afterwards)")
    q.add_argument("--overwrite", action="store_true", help="replace a non-empty DEST")
    q.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=run_fetch)

    q = dsub.add_parser("check", help="validate a local copy: counts, shapes, dtypes, label values, checksums")
    q.add_argument("name", help="dataset name or manifest .yaml")
    q.add_argument("root", help="folder holding the data")
    q.set_defaults(func=run_check)

    q = dsub.add_parser("show", help="write a PNG: image, mask, separation borders, weight map")
    q.add_argument("name", help="dataset name or manifest .yaml")
    q.add_argument("root", help="folder holding the data")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--index", type=int, default=0, help="which image/mask pair (default 0)")
    g.add_argument("--pair", default=None, help="pair name instead, e.g. 01/t002 or train/3")
    q.add_argument("--out", default=None, help="output PNG (default: show-NAME-PAIR.png)")
    q.add_argument("--w0", type=float, default=10.0, help="weight map w0 (default 10, paper Sec. 3)")
    q.add_argument("--sigma", type=float, default=5.0, help="weight map sigma in px (default 5, paper Sec. 3)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    q.set_defaults(func=run_show)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_list(args) -> int:
    from unet.data.manifest import list_manifests, load_manifest

    for name in list_manifests():
        m = load_manifest(name)
        print(f"{name:<10} {m.get('title', '')}")
    return 0


def run_fetch(args) -> int:
    from unet.data.manifest import fetch, load_manifest

    manifest = load_manifest(args.name)
    dest = fetch(manifest, args.dest, verify=not args.no_verify, overwrite=args.overwrite,
                 progress=not args.quiet and sys.stderr.isatty(), timeout=args.timeout)
    print(f"fetched {manifest['name']} into {dest}")
    return _report(manifest, dest)


def run_check(args) -> int:
    from unet.data.manifest import load_manifest

    return _report(load_manifest(args.name), args.root)


def _report(manifest, root) -> int:
    from unet.data.manifest import check

    report, problems = check(manifest, root)
    for line in report:
        print(f"  {line}")
    if problems:
        for line in problems:
            print(f"problem: {line}", file=sys.stderr)
        print(f"{manifest['name']} at {root}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{manifest['name']} at {root}: OK")
    return 0


def run_show(args) -> int:
    from unet.data.loaders import dataset_pairs, load_sample
    from unet.data.manifest import dataset_root, load_manifest

    manifest = load_manifest(args.name)
    root = dataset_root(manifest, args.root)
    pairs = [p for p in dataset_pairs(manifest.get("loader", manifest["name"]), root) if p.mask is not None]
    if not pairs:
        raise UserError(f"{root}: no labelled images")
    if args.pair is not None:
        match = [p for p in pairs if p.name == args.pair or p.name.endswith("/" + args.pair)]
        if not match:
            raise UserError(f"no pair named {args.pair!r}; e.g. {', '.join(p.name for p in pairs[:3])}")
        pair = match[0]
    else:
        if not 0 <= args.index < len(pairs):
            raise UserError(f"--index {args.index} out of range: {len(pairs)} labelled pairs")
        pair = pairs[args.index]
    out = Path(args.out or f"show-{manifest['name']}-{pair.name.replace('/', '-')}.png")
    sample = load_sample(pair)
    write_show_png(sample, out, w0=args.w0, sigma=args.sigma, overwrite=args.overwrite,
                   title=f"{manifest['name']} {pair.name}")
    print(f"wrote {out}")
    return 0


def write_show_png(sample, out, *, w0=10.0, sigma=5.0, overwrite=False, title=""):
    """Four panels: image, instance mask, target with separation borders, weight map (paper Fig. 3)."""
    import numpy as np

    from unet.data.targets import IGNORE_INDEX, separation_borders, training_target
    from unet.data.weights import weight_map
    from unet.io import atomic_path
    from unet.viz import pyplot

    plt = pyplot()
    labels = sample.labels
    target = training_target(labels, partial=sample.partial)
    borders = separation_borders(labels)
    weights = weight_map(labels, w0=w0, sigma=sigma, target=target)

    rng = np.random.default_rng(0)
    colours = rng.uniform(0.25, 1.0, (int(labels.max()) + 1, 3))
    colours[0] = 0
    shown = np.zeros(target.shape + (3,))
    shown[target == 1] = (1, 1, 1)
    shown[borders] = (1, 0.1, 0.1)
    shown[target == IGNORE_INDEX] = (0.3, 0.3, 0.6)

    fig, ax = plt.subplots(1, 4, figsize=(16, 4.4))
    ax[0].imshow(sample.image[0], cmap="gray")
    ax[0].set_title("image (normalised)")
    ax[1].imshow(colours[labels])
    ax[1].set_title(f"mask: {len(np.unique(labels)) - 1} cells")
    ax[2].imshow(shown)
    ax[2].set_title("target; red: separation borders" + ("; blue: ignored" if sample.partial else ""))
    im = ax[3].imshow(weights, cmap="jet")
    ax[3].set_title(f"weight map (eq. 2, w0={w0:g}, sigma={sigma:g})")
    fig.colorbar(im, ax=ax[3], fraction=0.046)
    for a in ax:
        a.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
