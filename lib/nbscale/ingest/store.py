"""Versioned datasets on disk: `<data_dir>/datasets/NAME/vK/` holds `data/` (Parquet shards),
`quarantine/` (malformed rows, when any) and `manifest.json` (lineage).

The file work runs where the data dir is (`on_data_host`: here, or on the cluster over Spark Connect),
so the functions it runs take the datasets root as an argument and never read the notebook's settings.

A version is published by renaming a finished staging directory into place, so a reader sees a
whole version or none; a failed or interrupted ingest leaves only a staging directory, which no
reader lists and the next ingest of that name sweeps away.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import events
from ..config import settings
from ..datahost import on_data_host, remove_tree
from ..errors import NbscaleError, connect_server_gone

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
REF_RE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_\-]*)(@v(?P<version>\d+)|@latest)?$")
STALE_STAGING_S = 24 * 3600


def root() -> Path:
    return Path(settings().data_dir) / "datasets"


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise NbscaleError(f"Dataset name {name!r} is not valid: use letters, digits, '_' or '-', starting with a letter.")
    return name


def versions(name: str) -> list[int]:
    """Published versions of `name`, oldest first."""
    return on_data_host(_published_versions, str(root()), name)


def _published_versions(datasets: str, name: str) -> list[int]:
    folder = Path(datasets) / name
    if not folder.is_dir() or not _inside(datasets, folder):
        return []
    found = [int(p.name[1:]) for p in folder.iterdir()
             if re.fullmatch(r"v\d+", p.name) and (p / "manifest.json").is_file() and _inside(datasets, p)]
    return sorted(found)


def _inside(datasets: str, path: Path) -> bool:
    """False for a folder that a symlink leads out of the data dir's datasets: never listed or read."""
    return path.resolve().is_relative_to(Path(datasets).resolve())


def names() -> list[str]:
    return sorted(catalog())


def catalog() -> dict[str, dict[int, str | None]]:
    """Every published version's manifest text (None where it cannot be read), by name and number: one
    listing of the store (one Spark task over Connect)."""
    return on_data_host(_catalog, str(root()))


def _catalog(datasets: str) -> dict[str, dict[int, str | None]]:
    found: dict[str, dict[int, str | None]] = {}
    if not Path(datasets).is_dir():
        return found
    for folder in sorted(Path(datasets).iterdir()):
        numbers = _published_versions(datasets, folder.name) if folder.is_dir() else []
        if numbers:
            found[folder.name] = {number: _read_text_or_none(folder / f"v{number}" / "manifest.json") for number in numbers}
    return found


def _read_text_or_none(path) -> str | None:
    try:
        return Path(path).read_text()
    except (OSError, ValueError):
        return None


@dataclass
class Version:
    name: str
    version: int

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def path(self) -> Path:
        return root() / self.name / f"v{self.version}"

    @property
    def data_path(self) -> Path:
        return self.path / "data"

    @property
    def quarantine_path(self) -> Path:
        return self.path / "quarantine"

    @property
    def manifest(self) -> dict:
        return self.parse_manifest(on_data_host(_read_text_or_none, str(self.path / "manifest.json")))

    def parse_manifest(self, text: str | None) -> dict:
        try:
            manifest = json.loads(text) if text is not None else None
        except ValueError as exc:
            raise BrokenVersion(f"{self.ref} cannot be read: its manifest.json is damaged ({type(exc).__name__}). Move {self.path} "
                                "aside (or delete it) and use another version; the other versions are intact.") from None
        if text is None:
            raise BrokenVersion(f"{self.ref} cannot be read: its manifest.json is damaged (unreadable). Move {self.path} "
                                "aside (or delete it) and use another version; the other versions are intact.")
        if not isinstance(manifest, dict) or "counts" not in manifest or "schema" not in manifest:
            raise BrokenVersion(f"{self.ref} cannot be read: its manifest.json lacks counts or schema. Move {self.path} aside "
                                "(or delete it) and use another version; the other versions are intact.")
        return manifest


class BrokenVersion(NbscaleError):
    """A published version whose manifest cannot be read: named, and skipped by listings, never a crash of them."""


def latest_readable(name: str) -> tuple[Version | None, list[str]]:
    """The newest version whose manifest reads, and the refs of newer broken ones skipped on the way."""
    skipped = []
    for number in reversed(versions(name)):
        version = Version(name, number)
        try:
            _ = version.manifest  # reading it is the check
            return version, skipped
        except BrokenVersion:
            skipped.append(version.ref)
    return None, skipped


def resolve(ref: str) -> Version:
    """`NAME`, `NAME@latest` or `NAME@vK` -> a published version (one-line error otherwise)."""
    match = REF_RE.match(ref.strip())
    if not match:
        raise NbscaleError(f"{ref!r} is not a dataset reference: write NAME, NAME@latest or NAME@v2.")
    name, wanted = match.group("name"), match.group("version")
    have = versions(name)
    if not have:
        known = ", ".join(names()) or "none yet"
        raise NbscaleError(f"No dataset named {name!r} (datasets: {known}): create it with %%ingest {name}.")
    if wanted is not None and int(wanted) not in have:
        raise NbscaleError(f"{name} has no version v{wanted} (versions: {', '.join(f'v{v}' for v in have)}).")
    version = Version(name, int(wanted) if wanted is not None else have[-1])
    try:
        _ = version.manifest  # a damaged version is named here, in one line, not later from inside Spark
    except BrokenVersion as broken:
        readable = latest_readable(name)[0] if wanted is None else None
        raise BrokenVersion(f"{broken} The newest readable version is {readable.ref}." if readable else str(broken)) from None
    events.emit(events.DATASET_RESOLVED, name=name, version=version.version, pinned=wanted is not None)  # a running %%step learns what it reads
    return version


def latest(name: str) -> Version | None:
    have = versions(name)
    return Version(name, have[-1]) if have else None


def _new_staging(folder: str) -> str:
    """A fresh staging folder in `folder`, after sweeping ones a crashed ingest left a day ago or more."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for old in Path(folder).glob(".staging-*"):
        if time.time() - old.stat().st_mtime > STALE_STAGING_S:
            shutil.rmtree(old, ignore_errors=True)
    path = Path(folder) / f".staging-{uuid.uuid4().hex}"
    path.mkdir()
    return str(path)


@contextmanager
def staging(name: str):
    """A private directory to write a new version into; removed if the block fails."""
    path = Path(on_data_host(_new_staging, str(root() / check_name(name))))
    try:
        yield path
    except BaseException as exc:  # KeyboardInterrupt too: no half version may stay behind
        if not connect_server_gone(exc):  # (a server that is gone cannot remove it: the next ingest sweeps it a day later)
            on_data_host(remove_tree, str(path))
        raise


def publish(name: str, staged: Path, manifest: dict) -> Version:
    """Write the manifest, then rename the staged directory to the next version number."""
    return Version(name, on_data_host(_publish, str(root()), name, str(staged), manifest))


def _publish(datasets: str, name: str, staged: str, manifest: dict) -> int:
    folder = Path(datasets) / name
    while True:
        number = (_published_versions(datasets, name) or [0])[-1] + 1
        manifest = {**manifest, "name": name, "version": number}
        (Path(staged) / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
        try:
            os.rename(staged, folder / f"v{number}")  # atomic; fails if another kernel took the number
            return number
        except OSError:
            if not (folder / f"v{number}").exists():
                shutil.rmtree(staged, ignore_errors=True)
                raise
