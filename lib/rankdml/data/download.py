"""Fetch, check and unpack the real benchmarks described in the manifest ``rankdml/data/files/benchmarks.json``.

``download(name, root)`` returns the data set folder that the matching loader reads. It never
needs the network when the data set is already unpacked, or when the archives were put in
`root` by hand (they are checked against their md5 sums and unpacked). Otherwise it first probes
the download hosts with a short timeout, so that on a machine without internet it fails at once
with instructions for a manual download instead of hanging.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import json
import shutil
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from rankdml.data.benchmarks import SPECS, find_folder, resolve_root

#: The manifest is package data (it ships with every install), next to the embedded data sets.
MANIFEST_PATH = importlib.resources.files("rankdml.data.files") / "benchmarks.json"

_CHUNK = 1 << 20  # 1 MiB per read: big enough for speed, small enough for a smooth progress bar


class DownloadError(RuntimeError):
    """A benchmark could not be fetched, checked or unpacked."""


class ManualDownloadRequired(DownloadError):
    """The data set can only be downloaded by hand (e.g. behind a Google Drive page)."""


class NoConnectionError(DownloadError, ConnectionError):
    """None of the download hosts answered within the timeout."""


class ChecksumError(DownloadError):
    """A file's md5 differs from the one in the manifest."""


class UnsafeArchiveError(DownloadError, ValueError):
    """An archive member would land outside the extraction folder."""


# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------

def load_manifest(path: str | Path | None = None) -> dict:
    """The parsed manifest: ``{"datasets": {name: {"files": [...], "layout": [...], ...}}}``."""
    path = Path(path) if path is not None else MANIFEST_PATH
    if not path.is_file():
        raise FileNotFoundError(f"The benchmark manifest {path} does not exist. It ships inside the rankdml package: "
                                f"reinstall it (`pip install --force-reinstall rankdml`), or pass the path of a copy.")
    return json.loads(path.read_text(encoding="utf-8"))


def _entry(manifest: dict, name: str) -> dict:
    datasets = manifest["datasets"]
    if name not in datasets:
        raise ValueError(f"Unknown benchmark {name!r}; the manifest lists {', '.join(datasets)}.")
    return datasets[name]


def _instructions(name: str, entry: dict, root: Path) -> str:
    """Step-by-step manual download instructions for data set `name` into `root`."""
    lines = [f"Download these files by hand (on a machine with internet access) from {entry['homepage']}:"]
    for f in entry["files"]:
        md5 = f"md5 {f['md5']}" if f.get("md5") else "md5 unknown"
        where = root / f["dest"] if f.get("dest") else root
        lines.append(f"  - {f['filename']} ({md5}) from {' or '.join(f['urls'])}")
        if f.get("url_note"):
            lines.append(f"      ({f['url_note']})")
        lines.append(f"      -> put it in {where}")
    layout = "\n  ".join(line.replace("<root>", str(root)) for line in entry["layout"])
    lines.append(f"Then run rankdml.data.download({name!r}, {str(root)!r}) again to check and unpack them, or "
                 f"unpack them yourself so that the folder looks like:\n  {layout}")
    if entry.get("note"):
        lines.append(f"Note: {entry['note']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Network: quick reachability probe, streamed download
# ----------------------------------------------------------------------------------------------

def _probe(url: str, timeout: float) -> str | None:
    """None if the host of `url` answers, else the reason it does not."""
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered (e.g. 405 for HEAD): it is reachable
    except Exception as error:  # URLError, socket timeouts, refused connections, ...
        return f"{type(error).__name__}: {error}"


def _probe_all(urls: list[str], timeout: float) -> dict[str, str | None]:
    """Probe all `urls` in parallel; each gets an answer within `timeout` seconds overall.

    Threads with a deadline, because a socket timeout does not bound DNS resolution, which can
    hang for much longer on a machine without network.
    """
    results: dict[str, str | None] = {url: f"no answer within {timeout} s" for url in urls}

    def worker(url: str) -> None:
        results[url] = _probe(url, timeout)

    threads = [threading.Thread(target=worker, args=(url,), daemon=True) for url in urls]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return dict(results)  # a copy: late threads must not change the answer afterwards


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, target: Path, timeout: float) -> str:
    """Stream `url` to ``target.part`` with a progress bar, then rename it to `target`. Returns the md5."""
    from rankdml.runtime import progress

    part = target.with_name(target.name + ".part")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            with progress(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=target.name) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except BaseException:
        part.unlink(missing_ok=True)  # never leave a half file that looks like a download
        raise
    part.replace(target)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Safe extraction
# ----------------------------------------------------------------------------------------------

def _inside(base: Path, member: str) -> bool:
    """Whether archive member name `member` resolves to a path inside `base`."""
    if not member or Path(member).is_absolute() or member.startswith(("/", "\\")):
        return False
    target = (base / member).resolve()
    return target == base or base in target.parents


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a .tar(.gz/.bz2/.xz) or .zip `archive` into `dest`, refusing members that escape it.

    Refused: absolute names, ``..`` components leading outside, links pointing outside, and device
    files. The archive is unpacked into a temporary folder inside `dest` first and moved into place
    afterwards, so an interrupted run never leaves a half-unpacked data set that looks complete.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = dest.resolve()
    staging = dest / f".unpacking-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)

    def refuse(member: str, why: str) -> None:
        raise UnsafeArchiveError(f"Refusing to unpack {archive}: member {member!r} {why}. The archive may be "
                                 f"corrupt or malicious; delete it and download it again.")

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if not _inside(base, name):
                    refuse(name, f"would be written outside {dest}")
            staging.mkdir()
            zf.extractall(staging)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for m in members:
                if not _inside(base, m.name):
                    refuse(m.name, f"would be written outside {dest}")
                if m.issym() and not _inside(base, str(Path(m.name).parent / m.linkname)):
                    refuse(m.name, f"is a symbolic link to {m.linkname!r}, outside {dest}")
                if m.islnk() and not _inside(base, m.linkname):
                    refuse(m.name, f"is a hard link to {m.linkname!r}, outside {dest}")
                if m.isdev():
                    refuse(m.name, "is a device file")
            staging.mkdir()
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4/3.12: the stdlib's own safety net too
                tf.extractall(staging, members=members, filter="data")
            else:
                tf.extractall(staging, members=members)
    else:
        raise DownloadError(f"{archive} is neither a tar nor a zip archive; delete it and download it again.")
    try:
        for item in list(staging.iterdir()):
            _move_into(item, dest / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into(src: Path, dst: Path) -> None:
    """Move `src` to `dst`, merging into an existing folder (files from `src` win)."""
    if src.is_dir() and dst.is_dir():
        for child in list(src.iterdir()):
            _move_into(child, dst / child.name)
        src.rmdir()
    else:
        if dst.is_dir() and not src.is_dir():
            shutil.rmtree(dst)
        src.replace(dst)


# ----------------------------------------------------------------------------------------------
# download()
# ----------------------------------------------------------------------------------------------

def download(name: str, root: str | Path | None = None, *, timeout: float = 10) -> Path:
    """Make data set `name` ("cub200", "cars196", "sop", "inshop") available under `root`; return its folder.

    Steps: (1) already unpacked -> return at once; (2) archives missing from `root` are fetched
    (never for manual-only sets such as In-Shop, which raise ManualDownloadRequired), after a
    reachability probe of at most `timeout` seconds that raises NoConnectionError with manual
    instructions when no host answers; (3) each file is checked against its md5 when one is known
    (ChecksumError) and archives are unpacked safely (UnsafeArchiveError). Archives are kept in
    `root`; delete them once the data set loads. `root` defaults as for the loaders:
    ``$RANKDML_DATA/<name>``, else ``~/.cache/rankdml/<name>``.
    """
    if name not in SPECS:
        raise ValueError(f"Unknown benchmark {name!r}; expected one of {', '.join(SPECS)}.")
    entry = _entry(load_manifest(), name)
    root = resolve_root(name, root)
    try:
        return find_folder(name, root)
    except FileNotFoundError:
        pass

    files = entry["files"]
    target = {f["filename"]: (root / f["dest"] if f.get("dest") else root) / f["filename"] for f in files}
    missing = [f for f in files if not target[f["filename"]].is_file()]
    if missing and entry.get("manual"):
        raise ManualDownloadRequired(f"The {entry['title']} data set cannot be downloaded automatically and was "
                                     f"not found in {root}.\n" + _instructions(name, entry, root))
    fresh_md5: dict[str, str] = {}
    if missing:
        urls = [u for f in missing for u in f["urls"]]
        answers = _probe_all(urls, timeout)
        if all(answers[u] is not None for u in urls):
            reasons = "; ".join(f"{u}: {answers[u]}" for u in urls)
            raise NoConnectionError(f"No internet connection to the {entry['title']} download hosts here "
                                    f"(waited at most {timeout} s; {reasons}).\n" + _instructions(name, entry, root))
        for f in missing:
            path = target[f["filename"]]
            path.parent.mkdir(parents=True, exist_ok=True)
            errors = []
            for url in [u for u in f["urls"] if answers[u] is None]:
                try:
                    fresh_md5[f["filename"]] = _fetch(url, path, timeout)
                    break
                except Exception as error:  # try the next address
                    errors.append(f"{url}: {type(error).__name__}: {error}")
            else:
                raise DownloadError(f"Could not download {f['filename']} ({'; '.join(errors) or 'no host answered'})."
                                    f"\n" + _instructions(name, entry, root))

    for f in files:
        path = target[f["filename"]]
        if f.get("md5"):
            actual = fresh_md5.get(f["filename"]) or md5sum(path)
            if actual != f["md5"]:
                if f["filename"] in fresh_md5:
                    path.unlink()  # our own download is corrupt: do not keep it around
                raise ChecksumError(f"{path} has md5 {actual}, but {f['md5']} was expected: the file is corrupt "
                                    f"or a different version. Delete it (if still there) and download it again."
                                    f"\n" + _instructions(name, entry, root))
        if f.get("extract"):
            safe_extract(path, path.parent)
    try:
        return find_folder(name, root)
    except FileNotFoundError as error:
        raise DownloadError(f"The files of {entry['title']} were unpacked into {root}, but the expected layout is "
                            f"still incomplete:\n{error}") from error


__all__ = ["download", "load_manifest", "safe_extract", "md5sum", "MANIFEST_PATH", "DownloadError",
           "ManualDownloadRequired", "NoConnectionError", "ChecksumError", "UnsafeArchiveError"]
