"""Fetch Debian packages by name and unpack them into the cache folder, never into the repository.

`fetch_package(name)` returns a `FetchedPackage` (name, version, the `.deb`, the unpacked root). It takes the `.deb`
from `debs_dir` when one is there (a folder of packages downloaded beforehand, so that a user without root or network
can rebuild), else runs `apt-get download NAME` into `$DIFFUSION_LINK_CACHE/debian/debs`. The version is read from the
package itself (`dpkg-deb -f`), so it is whatever this machine's Debian release gave; the manifest keys recordings on
their content, not on this string. Unpacking (`dpkg-deb -x`) goes to `$DIFFUSION_LINK_CACHE/debian/root/NAME_VERSION`
and is marked done only once complete, so a stopped fetch resumes where it stopped.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from diffusion_link.hub.references import cache_dir


logger = logging.getLogger(__name__)

DONE_MARK = ".unpacked"


@dataclass(frozen=True)
class FetchedPackage:
    name: str
    version: str
    deb: str
    root: str

    def path(self, file: str) -> str:
        """A file of the package (its path inside the package, as in the manifest)."""
        return os.path.join(self.root, file.lstrip("/"))


def debian_cache(*parts: str) -> str:
    return os.path.join(cache_dir(), "debian", *parts)


def _run(command: list[str], what: str) -> str:
    if shutil.which(command[0]) is None:
        raise RuntimeError(f"{what} needs {command[0]!r}, which this machine lacks (it runs on Debian and its "
                           "derivatives); download the .deb files elsewhere and pass their folder as debs_dir.")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(command)}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def find_deb(name: str, folder: str) -> str | None:
    """The `.deb` of package `name` in `folder` (the newest by name when several), else None."""
    found = sorted(glob.glob(os.path.join(glob.escape(folder), f"{glob.escape(name)}_*.deb")))
    return found[-1] if found else None


def download_deb(name: str, folder: str) -> str:
    """`apt-get download NAME` into `folder`; the path of the `.deb` it got."""
    os.makedirs(folder, exist_ok=True)
    done = subprocess.run(["apt-get", "download", name], cwd=folder, capture_output=True, text=True) \
        if shutil.which("apt-get") else None
    if done is None or done.returncode != 0:
        reason = "apt-get is not on this machine" if done is None else (done.stderr.strip() or done.stdout.strip())
        raise RuntimeError(f"Could not download the Debian package {name!r}: {reason}. Run `apt-get update` first, "
                           f"or download it elsewhere and pass its folder as debs_dir.")
    deb = find_deb(name, folder)
    if deb is None:
        raise RuntimeError(f"apt-get download {name} wrote no {name}_*.deb into {folder}")
    return deb


def deb_version(deb: str) -> str:
    """The package's version, read from its control file."""
    return _run(["dpkg-deb", "-f", deb, "Version"], f"Reading the version of {deb}").strip()


def unpack_deb(deb: str, target: str) -> str:
    """`dpkg-deb -x DEB TARGET`, skipped when TARGET was unpacked completely before."""
    if os.path.exists(os.path.join(target, DONE_MARK)):
        return target
    partial = target + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    _run(["dpkg-deb", "-x", deb, partial], f"Unpacking {deb}")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    open(os.path.join(target, DONE_MARK), "w").close()
    return target


def fetch_package(name: str, debs_dir: str | None = None, cache: str | None = None) -> FetchedPackage:
    """Package `name`, downloaded (or taken from `debs_dir`) and unpacked under the cache."""
    cache = cache or debian_cache()
    deb = (find_deb(name, debs_dir) if debs_dir else None) or find_deb(name, os.path.join(cache, "debs"))
    if deb is None:
        if debs_dir:
            logger.info("%s: no %s_*.deb in %s; downloading it", name, name, debs_dir)
        deb = download_deb(name, os.path.join(cache, "debs"))
    version = deb_version(deb)
    root = unpack_deb(deb, os.path.join(cache, "root", f"{name}_{version.replace(':', '%3a')}"))
    return FetchedPackage(name=name, version=version, deb=deb, root=root)
