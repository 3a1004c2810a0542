"""MediaPipe's face landmarks and selfie segmentation in torch, against LiteRT (Google's own TFLite
runtime) on the same files and real photos; the hair mask on the astronaut."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from sie3d.face.detect import detect_faces
from sie3d.face.landmarks import landmarks_68
from sie3d.face.tflite_graph import TFLiteGraph
from sie3d.weights import is_available, model_path

MODELS = ("mediapipe-face-landmark", "mediapipe-selfie-segmentation")
needs_models = pytest.mark.skipif(not all(is_available(m) for m in MODELS),
                                  reason="MediaPipe models not cached: sie3d weights download --offline-set")


@pytest.fixture(scope="module")
def astronaut():
    image = skimage.data.astronaut()
    return image, detect_faces(image, "dlib")[0]


def litert(path, x: np.ndarray) -> list[np.ndarray]:
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = interpreter_module.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]


@needs_models
@pytest.mark.parametrize("name, size", [("mediapipe-face-landmark", 192), ("mediapipe-selfie-segmentation", 256)])
def test_torch_graph_matches_litert_on_real_photos(astronaut, name, size):
    image, face = astronaut
    x0, y0, x1, y1 = face.box.astype(int)
    crops = [image[y0 - 40:y1 + 40, x0 - 40:x1 + 40], image, skimage.data.coffee()]
    graph = TFLiteGraph(model_path(name)).eval()
    for crop in crops:
        x = (cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0)[None]
        expected = litert(model_path(name), x)
        with torch.no_grad():
            ours = [o.numpy() for o in graph(torch.from_numpy(x))]
        for e, o in zip(expected, ours):
            assert o.shape == e.shape
            assert np.abs(o - e).max() <= 1e-4 * max(1.0, float(np.abs(e).max()))


@needs_models
def test_mesh_agrees_with_dlib_landmarks_and_the_hair_is_darker_than_the_skin(astronaut):
    from sie3d.face.mediapipe_models import face_mesh, hair_mask

    image, face = astronaut
    mesh = face_mesh(image, face)
    dlib68 = landmarks_68(image, face)
    iod = np.linalg.norm(dlib68[36:42].mean(0) - dlib68[42:48].mean(0))
    assert mesh.points.shape == (468, 3) and mesh.presence > 0.9
    for mp_index, dlib_index in ((1, 30), (152, 8), (61, 48), (291, 54)):  # nose tip, chin, mouth corners
        assert np.linalg.norm(mesh.points[mp_index, :2] - dlib68[dlib_index]) < 0.15 * iod
    assert mesh.points[1, 2] < mesh.points[234, 2]  # the nose tip is nearer the camera than the cheek's edge
    hair = hair_mask(image, mesh)
    assert 3000 < hair.sum() < 30000
    rows = np.nonzero(hair)[0]
    assert rows.min() < mesh.points[:, 1].min()  # hair above the forehead
    skin = image[int(mesh.points[50, 1]) - 3:int(mesh.points[50, 1]) + 3, int(mesh.points[50, 0]) - 3:int(mesh.points[50, 0]) + 3]
    assert image[hair].mean() < skin.reshape(-1, 3).mean() - 40  # brown hair, lighter skin
