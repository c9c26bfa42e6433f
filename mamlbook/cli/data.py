"""`mamlbook data`: fetch and verify data sets, and time task sampling."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .args import comma_names

DATASETS = ("omniglot",)


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="fetch, verify and benchmark data sets")
    actions = data.add_subparsers(dest="action", required=True)

    fetch = actions.add_parser("fetch", help="download a data set, verify its checksums and extract it")
    fetch.add_argument("dataset", choices=DATASETS)
    fetch.add_argument("--files", type=comma_names, help="comma-separated file names (default: all)")
    fetch.add_argument("--root", type=Path, help="data root (default: $MAMLBOOK_DATA, else a per-user cache)")
    fetch.add_argument("--mirror", help="base URL to download from instead of the official one")
    fetch.add_argument("--no-extract", action="store_true", help="keep the zips only (the loaders read zips)")
    fetch.set_defaults(handler=run_fetch)

    verify = actions.add_parser("verify", help="check every data file present against its published checksum")
    verify.add_argument("--root", type=Path, help="data root (default: $MAMLBOOK_DATA, else a per-user cache)")
    verify.set_defaults(handler=run_verify)

    bench = actions.add_parser("bench", help="Omniglot tasks sampled per second (train split)")
    bench.add_argument("--n-way", type=int, default=5)
    bench.add_argument("--k-shot", type=int, default=1)
    bench.add_argument("--k-query", type=int, default=1)
    bench.add_argument("--batch-size", type=int, default=1000, help="tasks per sample() call")
    bench.add_argument("--seconds", type=float, default=3.0)
    bench.set_defaults(handler=run_bench)


def run_fetch(args: argparse.Namespace) -> int:
    from ..data import FILES, extract, omniglot_file, omniglot_folder

    names = args.files or list(FILES)
    unknown = [n for n in names if n not in FILES]
    if unknown:
        raise ValueError(f"unknown Omniglot files {unknown}; known files: {', '.join(FILES)}")
    folder = omniglot_folder(args.root)
    for name in names:
        present = (folder / name).exists()
        print(f"{'verifying' if present else 'downloading'} {name}", flush=True)
        path = omniglot_file(name, args.root, download_missing=True, base_url=args.mirror)
        if args.no_extract:
            continue
        if os.access(folder, os.W_OK):
            print(f"  ok, extracted to {extract(path, FILES[name], folder)}")
        else:
            print(f"  ok; {folder} is read-only, so not extracted (the loaders read the zip itself)")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ..data import file_status, omniglot_folder

    print(f"Omniglot files in {omniglot_folder(args.root)}")
    rows = file_status(args.root)
    for name, status, detail in rows:
        print(f"  {name:<30} {status:<8} {detail}")
    corrupt = [name for name, status, _ in rows if status == "corrupt"]
    if corrupt:
        print(f"{len(corrupt)} corrupt: delete and fetch again ({', '.join(corrupt)})")
        return 1
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from ..tasks.omniglot import sampling_throughput

    rate = sampling_throughput(args.n_way, args.k_shot, args.k_query, args.batch_size, args.seconds)
    print(
        f"Omniglot {args.n_way}-way {args.k_shot}-shot, {args.k_query} queries per class, "
        f"batches of {args.batch_size}: {rate:,.0f} tasks/s"
    )
    return 0
