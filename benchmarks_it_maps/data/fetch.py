"""Download the released Arcaro2020 archive into the data home (resumable), check it, record its sha256, import it.

The download goes to ``<home>/downloads/Arcaro2020.zip.partial`` and resumes from there with an HTTP Range request
when interrupted; only a complete archive whose members pass the layout check is renamed to
``<home>/downloads/Arcaro2020.zip``. ``<home>/downloads/manifest.json`` records url, size and sha256 of every
downloaded archive (written atomically).
"""
from __future__ import annotations

import datetime
import http.client
import json
import logging
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import conventions as cv
from benchmarks_it_maps.home import atomic_file, data_home, sha256_file

logger = logging.getLogger(__name__)

DOWNLOADS = "downloads"
MANIFEST = "manifest.json"
CHUNK_BYTES = 1 << 20
#: Bytes compared at the end of a partial download the server calls complete (HTTP 416).
TAIL_BYTES = 1 << 16


class FetchError(RuntimeError):
    """The archive could not be downloaded or is not the expected archive; the message is one line."""


def offline_hint(url: str) -> str:
    return (f"could not download {url}; download {cv.ARCHIVE_NAME} on a machine with network access and import the "
            f"local copy with: brainscore data import arcaro2020 PATH/TO/{cv.ARCHIVE_NAME}")


def download(url: str, dest: str | Path, *, timeout: float = 30.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` via ``dest.partial``, resuming a previous partial download (HTTP Range).

    The partial file is renamed onto ``dest`` only when complete. Raises :class:`FetchError` on network errors
    (the partial file is kept for the next attempt).
    """
    dest = Path(dest)
    partial = dest.with_name(dest.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "brainscore-itmaps"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to send: complete only if it is the server's file
            total = _content_range_total(error.headers.get("Content-Range", "") if error.headers else "")
            if total == have and _tail_matches(url, partial, have, timeout):
                os.replace(partial, dest)
                return dest
            logger.warning("%s: %d bytes, but the server's file is %s bytes%s; it is not a part of %s, starting "
                           "again", partial, have, "an unknown number of" if total is None else total,
                           " with other content at its end" if total == have else "", url)
            partial.unlink(missing_ok=True)
            return download(url, dest, timeout=timeout, progress=progress)
        raise FetchError(f"{offline_hint(url)} (HTTP {error.code} {error.reason})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise FetchError(f"{offline_hint(url)} ({reason})") from None
    dest.parent.mkdir(parents=True, exist_ok=True)  # only once the server answered: no traces when offline
    with response:
        status = getattr(response, "status", 200)
        if have and status == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start != have:
                raise FetchError(f"{url}: server resumed at byte {start}, expected {have}; delete {partial} and "
                                 "fetch again")
            mode = "ab"
            logger.info("resuming %s at %d bytes", url, have)
        else:
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        try:
            with open(partial, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                unit_divisor=1024, desc=f"downloading {dest.name}",
                                                disable=not progress) as bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            raise FetchError(f"{offline_hint(url)} (interrupted: {type(error).__name__}; run the command again to "
                             "resume)") from None
    if total is not None and partial.stat().st_size != total:
        raise FetchError(f"{offline_hint(url)} (got {partial.stat().st_size} of {total} bytes; run the command "
                         "again to resume)")
    os.replace(partial, dest)
    return dest


def _content_range_total(value: str) -> int | None:
    # "bytes */1000" (416) or "bytes 100-999/1000"
    try:
        return int(value.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None


def _tail_matches(url: str, partial: Path, have: int, timeout: float, tail: int = TAIL_BYTES) -> bool:
    """Whether the last ``tail`` bytes of ``partial`` equal the server's (a zip ends in its central directory, with
    every member's CRC: a different archive of the same size differs there)."""
    start = max(0, have - tail)
    request = urllib.request.Request(url, headers={"User-Agent": "brainscore-itmaps", "Range": f"bytes={start}-"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if getattr(response, "status", 200) != 206 or _content_range_start(
                    response.headers.get("Content-Range", "")) != start:
                return False
            theirs = response.read(have - start + 1)
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False
    with open(partial, "rb") as f:
        f.seek(start)
        return f.read() == theirs


def _content_range_start(value: str) -> int | None:
    # "bytes 100-999/1000"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def check_members(path: str | Path) -> list[str]:
    """Check that ``path`` is a zip holding the expected members (with or without the top folder); returns names.

    Raises :class:`FetchError` naming the file and the missing members.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise FetchError(f"{path}: not a zip archive (expected {cv.ARCHIVE_NAME} with "
                         f"{', '.join(cv.EXPECTED_MEMBERS)})")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        bad = archive.testzip()
    if bad is not None:
        raise FetchError(f"{path}: member {bad} is corrupt (CRC mismatch); delete the file and fetch again")
    found = set(names)
    missing = [m for m in cv.EXPECTED_MEMBERS
               if m not in found and f"{cv.ARCHIVE_TOP_FOLDER}/{m}" not in found]
    for monkey in cv.MONKEYS.values():
        prefixes = (f"{monkey.image_path}/", f"{cv.ARCHIVE_TOP_FOLDER}/{monkey.image_path}/")
        if not any(n.startswith(prefixes) and not n.endswith("/") for n in names):
            missing.append(f"{monkey.image_path}/ (images)")
    if missing:
        raise FetchError(f"{path}: zip members missing: {', '.join(missing)} (expected the Arcaro2020 layout: "
                         f"{', '.join(cv.EXPECTED_MEMBERS)} and the image folders)")
    return names


def read_manifest(home: Path) -> dict:
    path = home / DOWNLOADS / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def record(home: Path, archive: Path, url: str, sha256: str) -> dict:
    """Add ``archive``'s url, size and sha256 to the downloads manifest (atomically); returns the entry."""
    manifest = read_manifest(home)
    entry = {"url": url, "sha256": sha256, "bytes": archive.stat().st_size,
             "downloaded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    manifest[archive.name] = entry
    with atomic_file(home / DOWNLOADS / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return entry


def fetch_arcaro2020(url: str = cv.ARCHIVE_URL, *, home: str | Path | None = None, force: bool = False,
                     expected_sha256: str | None = None, timeout: float = 30.0, do_import: bool = True) -> dict:
    """Download (or reuse) the archive, check members and sha256, record it, and import it; returns the import
    summary plus ``archive`` and ``sha256``."""
    home = Path(home) if home else data_home()
    dest = home / DOWNLOADS / cv.ARCHIVE_NAME
    known = read_manifest(home).get(dest.name)
    if force:  # a fresh download that replaces the archive only once complete (a failed one keeps the old archive)
        dest.with_name(dest.name + ".partial").unlink(missing_ok=True)
    if force or not dest.is_file():
        download(url, dest, timeout=timeout)
    try:
        check_members(dest)
    except FetchError:
        dest.unlink(missing_ok=True)  # not the archive: never leave it where the next fetch would reuse it
        raise
    sha256 = sha256_file(dest)
    expected = (expected_sha256 or cv.ARCHIVE_SHA256 or "").lower() or None
    if expected and sha256 != expected:
        dest.unlink(missing_ok=True)
        raise FetchError(f"{dest}: sha256 {sha256} differs from the expected {expected}; the download was "
                         "removed, fetch again")
    if known and known.get("sha256") != sha256:
        if not force and not expected:
            raise FetchError(f"{dest}: sha256 {sha256} differs from {known.get('sha256')}, recorded when it was "
                             f"first downloaded (trust on first use); fetch again with --force, or pass --sha256")
        logger.warning("%s changed since it was recorded (sha256 %s -> %s)", dest, known.get("sha256"), sha256)
    if expected:
        trust = "verified"
    elif known and known.get("sha256") == sha256:
        trust = "as first downloaded"
    else:
        trust = "trusted on first use"
        logger.warning("%s: sha256 %s is not verified (no --sha256 given, none pinned in the package); it is "
                       "recorded in %s and later fetches must match it; pass --sha256 %s to verify it elsewhere",
                       dest, sha256, home / DOWNLOADS / MANIFEST, sha256)
    record(home, dest, url, sha256)
    result = {"archive": str(dest), "sha256": sha256, "sha256_check": trust}
    if do_import:
        result.update(data.import_arcaro2020(dest, home=home, force=force))
    return result
