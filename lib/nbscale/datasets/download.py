"""URLs in an ingest source: downloaded once into the data dir's cache, with a progress line,
checked against a known MD5 where there is one, and never left half-written."""
from __future__ import annotations

import hashlib
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import NbscaleError
from ..files import replacing

CHUNK = 1 << 20


def cache_dir() -> Path:
    from ..datadir import local_dir

    return local_dir() / "downloads"  # on this machine: over Spark Connect an ingest uploads what it needs


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, md5: str | None = None, timeout: float = 60.0) -> Path:
    """The cached local copy of `url` (downloaded on first use)."""
    from .known import KNOWN_MD5

    md5 = md5 or KNOWN_MD5.get(url)
    file_name = urllib.parse.urlparse(url).path.rstrip("/").rsplit("/", 1)[-1] or "download"
    target = cache_dir() / hashlib.sha1(url.encode()).hexdigest()[:16] / file_name
    if target.is_file() and (md5 is None or md5_of(target) == md5):
        return target
    with replacing(target) as partial:  # in place only when whole and checked
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:  # noqa: S310 - the user's URL
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    done += len(block)
                    _progress(url, done, total)
            print(file=sys.stderr)
        except (urllib.error.URLError, OSError) as exc:
            reason = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", None) or exc
            raise NbscaleError(f"Could not download {url} ({reason}): check the URL and the network, or download it and give the local "
                               "path.") from None
        if md5 is not None and (got := md5_of(partial)) != md5:
            raise NbscaleError(f"{url} downloaded with MD5 {got}, expected {md5}: the file is damaged or changed; nothing was cached.")
    return target


def _progress(url: str, done: int, total: int) -> None:
    name = url.rsplit("/", 1)[-1]
    if total:
        filled = int(30 * done / total)
        print(f"\rdownloading {name} [{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:.1f}/{total / 1e6:.1f} MB", end="", file=sys.stderr)
    else:
        print(f"\rdownloading {name} {done / 1e6:.1f} MB", end="", file=sys.stderr)


def localize(source: str) -> str:
    """The source with every http(s) URL replaced by its cached local file."""
    from ..sources import items, joined

    return joined([str(download(item)) if item.startswith(("http://", "https://")) else item for item in items(source)])
