#!/usr/bin/env bash
# Packs what benchmarks/gpu_check.sh needs on a bare CUDA machine that reaches no network into .gpu/
# (ignored by git; ~45 MB, so it travels with a checkout within a 64 MiB limit). Run here, with the
# project's environment made (make models):
#   wheels/   Python 3.12 wheels the GPU machine lacks: diffusers, gsplat (JIT-built there), dlib-bin, tflite
#   dlib/     dlib's 5-point aligner and 128-d descriptor, xz-compressed (the 100 MB 68-point predictor stays
#             behind: the paper path there reads its 68 landmarks off MediaPipe's mesh, models.landmarks=mediapipe)
#   home/     a SIE3D_HOME with the offline models the paper path and its evaluation read
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=.gpu
rm -rf "$DEST" && mkdir -p "$DEST/wheels" "$DEST/dlib" "$DEST/home/models"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST/wheels" \
    diffusers==0.42.1 gsplat==1.5.3 dlib-bin==20.0.1.post1 tflite==2.18.0
models=$("$PY" -c "import face_recognition_models as f, pathlib; print(pathlib.Path(f.__file__).parent / 'models')")
for f in shape_predictor_5_face_landmarks.dat dlib_face_recognition_resnet_model_v1.dat; do
    xz -T0 -6 -c "$models/$f" > "$DEST/dlib/$f.xz"
done
cache=$("$PY" -c "from sie3d.weights import sie3d_home; print(sie3d_home() / 'models')")
for name in fer-emotion faceapi-expression clip-bpe-vocab mediapipe-face-landmark mediapipe-selfie-segmentation yunet sface; do
    cp -r "$cache/$name" "$DEST/home/models/"
done
du -sh "$DEST"
