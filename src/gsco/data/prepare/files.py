"""What every preparer shares: fetching a published file (resumable, MD5-checked, atomic), copying and writing
files only where missing or different, and the error that says what is wrong and what to do."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import sys
import urllib.error
import urllib.request
from pathlib import Path

from gsco.errors import GscoError

CHUNK = 1 << 20


class PrepareError(GscoError, RuntimeError):
    """A download or check that failed; the message says what is wrong and what to do (no partial file is left
    under the final name)."""


@dataclasses.dataclass(frozen=True)
class Download:
    filename: str  # under root
    url: str  # the published file (ending .gz when gzipped)
    md5: str  # of the file as stored under filename (decompressed, when the published one is gzipped)
    checksums: str = "the medmnist package's table"  # where the MD5 comes from, for the error message
    gzipped: bool = False  # published as filename + ".gz"; stored decompressed


@dataclasses.dataclass(frozen=True)
class PublishedSource:
    """A benchmark made from the files its publisher distributes, which the user downloads (``source=``)."""

    name: str
    where: str  # what to download, from where, under which terms (the terms last, in parentheses)
    sizes: dict  # items per split after conversion

    @property
    def licence(self) -> str:
        return self.where.rsplit("(", 1)[-1].rstrip(")")


def user_folder(spec: PublishedSource, source: str | None, what: str = "FOLDER (the folder holding them)") -> Path:
    """``source`` as the local folder (or file) the user downloaded, else one error saying what to download."""
    if source is None or "://" in source or not Path(source).exists():
        raise PrepareError(f"{spec.name}: download {spec.where} yourself and give source={what}")
    return Path(source)


def check_sizes(spec: PublishedSource, found: dict, where: Path, expected: dict | None, unit: str) -> None:
    expected = expected or spec.sizes
    if found != expected:
        raise PrepareError(f"{spec.name}: {where} gives {found} {unit} per split, the published sizes are "
                           f"{expected}; another version of the files?")


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def origin_of(download: Download, source: str | None) -> str:
    """Where a file comes from: its published URL, ``source``/name for another URL, or a local path (for a gzipped
    file the folder may hold it decompressed or not)."""
    published = download.url.rsplit("/", 1)[-1].split("?")[0]
    if source is None:
        return download.url
    if "://" in source:
        return source.rstrip("/") + "/" + published
    folder = Path(source)
    if download.gzipped and not (folder / published).is_file():
        return str(folder / Path(download.filename).name)
    return str(folder / published)


def fetch(download: Download, root: Path, source: str | None = None, progress: bool = True) -> str:
    """``root/filename`` in place with the right MD5: ``present`` (nothing done), ``copied`` or ``downloaded``."""
    final = root / download.filename
    if final.is_file():
        found = md5_of(final)
        if found == download.md5:
            return "present"
        raise PrepareError(f"{final} is there but its MD5 is {found}, not the published {download.md5} (a re-saved "
                           "or another version's file?); move it away to fetch the published one")
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    origin = origin_of(download, source)
    packed = download.gzipped and origin.split("?")[0].endswith(".gz")
    if "://" in origin:
        landing = final.with_name(final.name + ".gz.partial") if packed else partial
        _download(origin, landing, progress)
        how = "downloaded"
    else:
        landing, how = Path(origin), "copied"
        if not landing.is_file():
            raise PrepareError(f"source {source}: {landing.name} is not there ({origin})")
        if not packed:
            _copy(landing, partial)
    downloaded_packed = packed and how == "downloaded"
    if packed:
        try:
            _gunzip(landing, partial)
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            partial.unlink(missing_ok=True)
            if downloaded_packed:
                landing.unlink()
            raise PrepareError(f"{origin}: not a complete gzip file ({exc}); nothing was written to {final}") from None
    found = md5_of(partial)
    if found != download.md5:
        partial.unlink()
        if downloaded_packed:
            landing.unlink()
        raise PrepareError(f"{origin}: MD5 {found}, expected {download.md5} ({download.checksums}): the file "
                           f"is damaged or not the published one; nothing was written to {final}")
    partial.replace(final)
    if downloaded_packed:
        landing.unlink()
    return how


def _gunzip(packed: Path, partial: Path) -> None:
    with gzip.open(packed, "rb") as src, partial.open("wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)


def _copy(origin: Path, partial: Path) -> None:
    with origin.open("rb") as src, partial.open("wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)


def _download(url: str, partial: Path, progress: bool) -> None:
    """Stream ``url`` into ``partial``, continuing a partial file where the server honours a byte range."""
    from tqdm import tqdm

    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the range starts at the end: the partial file is complete
            return
        raise PrepareError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PrepareError(f"{url} cannot be reached ({reason}); offline, download it elsewhere and give "
                           f"source=DIR (the folder holding {url.rsplit('/', 1)[-1].split('?')[0]})") from None
    resumed = have and getattr(response, "status", 200) == 206
    total = response.headers.get("Content-Length")
    mode = "ab" if resumed else "wb"
    received = 0
    with response, partial.open(mode) as out, tqdm(total=int(total) + (have if resumed else 0) if total else None,
                                                  initial=have if resumed else 0, unit="B", unit_scale=True,
                                                  desc=partial.name.removesuffix(".partial"), file=sys.stderr,
                                                  disable=not progress) as bar:
        try:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:  # a reset, a timeout, an incomplete read
            out.flush()
            _dropped(url, partial, f"{type(exc).__name__}")
    if total is not None and received < int(total):
        _dropped(url, partial, f"{received} of {total} bytes")


def _dropped(url: str, partial: Path, how: str) -> None:
    """The connection ended early: keep what came (the next run asks for the rest) and say so."""
    raise PrepareError(f"{url}: the connection dropped ({how}); {partial} ({partial.stat().st_size} bytes) is kept: "
                       "run the same command again to resume the download")


def copy_if_changed(origin: Path, target: Path) -> bool:
    """``origin`` copied to ``target`` (through ``target.partial``) unless a file of its size is there; True when
    copied."""
    if target.is_file() and target.stat().st_size == origin.stat().st_size:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    _copy(origin, partial)
    partial.replace(target)
    return True


def write_if_changed(target: Path, data: bytes) -> bool:
    """``data`` written to ``target`` (through ``target.partial``) unless it already holds exactly that; True when
    written."""
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return True
