"""``contrasphere analyze``: embed a dataset with a pretrained encoder and report its geometry on the sphere."""

from __future__ import annotations

import argparse

from ..train.analyze import DEFAULT_MAX_POINTS, ENCODER_NAMES, KINDS, analyze

EPILOG = f"""\
examples:
  contrasphere analyze stsb --encoder minilm                        # STS-B test pairs (--split dev for dev)
  contrasphere analyze cifar10 --encoder efficientnet_lite0 --limit 2000
  contrasphere analyze photos/ --encoder encoder.pt                 # class sub-folders, a TorchScript encoder
  contrasphere analyze sentences.txt --encoder path/to/hf-model     # one sentence a line, a local HF model
  contrasphere analyze flickr8k --encoder runs/flickr8k-lit         # an image-text run on its held-out split

DATA: a dataset the loaders know (cifar10: its test split; stsb, sts12..sts16, sickr with --split; wiki1m;
flickr8k: its captions with a text encoder, its images with an image encoder), an image folder with class
sub-folders, or a text file with one sentence per line. Datasets are looked for in
--data-root, else $CONTRASPHERE_DATA, ./data, ../shared/data and ~/data; nothing is downloaded.

ENCODER: {", ".join(ENCODER_NAMES)} (all-MiniLM-L6-v2 mean-pooled; ImageNet-pretrained EfficientNet-Lite0 on
images resized to 224 and scaled to [-1, 1]), a local Hugging Face model folder (text, mean-pooled), a
TorchScript file (an image encoder taking float images (B, C, H, W) in [0, 1] at the data's own size and
returning (B, D)), or a run folder of an image-text model trained by contrasphere (kind image-text: its two
towers embed the run's held-out images and their captions; checkpoints are read with weights_only=True).
TorchScript files are read with torch.jit.load; pickled modules (torch.save of an nn.Module) are refused,
because unpickling an untrusted file can run arbitrary code.

Writes OUT/report.md (a table of every metric), OUT/analysis.json (every number and the settings) and figures:
the alignment-uniformity point when the data has positive pairs (STS pairs scored above 4, as SimCSE; the first
two captions of each Flickr8k image, whose captions are also LiDAR's views), the
circle for 2-d embeddings, otherwise a histogram of pair cosines. Labelled images add per-class statistics and a
kNN accuracy on a seeded half split. Image-text runs add the modality gap, the matching, non-matching and
intra-modal cosines, the text side's geometry (LiDAR over each image's captions) and recall in both directions.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="embed a dataset with a pretrained encoder and report alignment, uniformity and the rest",
        description="Embed a dataset with a frozen encoder, measure the embeddings on the unit sphere (alignment "
        "of the data's positive pairs, uniformity, anisotropy, Wasserstein uniformity, effective rank, alpha-ReQ, "
        "LiDAR, per-class statistics) and write a report folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="dataset name, image folder or text file")
    p.add_argument(
        "--encoder",
        required=True,
        help="minilm, efficientnet_lite0, a HF model folder, a TorchScript file or an image-text run folder",
    )
    p.add_argument("--kind", choices=KINDS, help="what DATA holds (default: inferred; checked when given)")
    p.add_argument("--out", metavar="DIR", help="report folder (default: analysis/<data-name>-<encoder>)")
    p.add_argument("--batch-size", type=int, default=64, help="items per embedding batch (default: 64)")
    p.add_argument(
        "--limit", type=int, default=0, help="at most N images, sentences or pairs (images: a seeded subset; 0: all)"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto (CUDA if any)")
    p.add_argument("--data-root", metavar="DIR", help="where to look for a named dataset (only there)")
    p.add_argument("--split", default="test", help="STS split: stsb train/dev/test, sickr train/trial/test")
    p.add_argument("--alpha", type=float, default=2.0, help="alignment exponent (default: 2)")
    p.add_argument("--t", type=float, default=2.0, help="uniformity scale (default: 2)")
    p.add_argument(
        "--max-points",
        type=int,
        default=DEFAULT_MAX_POINTS,
        help=f"measure uniformity on a random subset this large (default: {DEFAULT_MAX_POINTS}; 0 means all)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    folder, analysis = analyze(
        args.data,
        args.encoder,
        kind=args.kind,
        out=args.out,
        batch_size=args.batch_size,
        limit=args.limit,
        device=args.device,
        root=args.data_root,
        split=args.split,
        alpha=args.alpha,
        t=args.t,
        max_points=None if args.max_points == 0 else args.max_points,
        progress=args.progress,
    )
    print((folder / "report.md").read_text(), end="")
    print(f"\nwrote {folder}/report.md, analysis.json and {', '.join(analysis['figures']) or 'no figure'}")
    return 0
