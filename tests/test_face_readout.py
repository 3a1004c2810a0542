"""The face readout (:mod:`sie3d.face.readout`): the reading of a photo's face, the views' faces and
the back of the head's colour."""

import numpy as np
import pytest
import torch
from skimage.data import astronaut

from sie3d.face.detect import detect_faces, select_face
from sie3d.face.readout import FaceReadout, back_of_head_colour, dlib_descriptor, view_faces
from sie3d.vocabulary import EMOTIONS
from sie3d.weights import is_available


@pytest.mark.skipif(not is_available("fer-emotion"), reason="fer-emotion not cached")
def test_reading_of_a_photo_and_of_a_faceless_image():
    photo = astronaut()
    face = select_face(detect_faces(photo, "dlib"))
    readout = FaceReadout(torch.device("cpu"), margin=0.15)
    reading = readout.read(photo, ["fer", "fer"], face=face, photo_descriptor=dlib_descriptor(photo, face))
    assert reading.face_found is None and reading.dlib_distance == pytest.approx(0.0, abs=1e-6)
    assert list(reading.emotions) == ["fer"] and list(reading.emotions["fer"]) == list(EMOTIONS)
    assert sum(reading.emotions["fer"].values()) == pytest.approx(1.0, abs=1e-5)
    wider = FaceReadout(torch.device("cpu"), margin=0.5, models=readout.models)  # the crop follows the margin
    assert wider.classifier("fer") is readout.classifier("fer")  # one loaded classifier
    assert wider.emotions(photo, face.box, ["fer"])["fer"] != reading.emotions["fer"]
    blank = readout.read(np.full((128, 128, 3), 255, np.uint8), ["fer"])
    assert blank.face_found is False and blank.to_dict() == {"face_found": False}


def test_back_of_head_colour_reads_the_top_of_the_silhouette():
    image = np.full((100, 60, 3), 255, np.uint8)
    image[10:50, 10:50] = (90, 60, 30)  # hair over the upper part of the head
    image[50:90, 20:40] = (220, 180, 160)  # neck and skin below
    hair, skin = np.array([90, 60, 30]) / 255, np.array([220, 180, 160]) / 255
    back = back_of_head_colour(image, {"hair": hair.tolist(), "skin": skin.tolist()})
    assert np.allclose(back["colour"], hair) and back["to_hair"] < 1e-6
    assert back["to_skin"] == pytest.approx(np.linalg.norm([130, 120, 130]))
    assert back_of_head_colour(image, {})["to_hair"] is None  # no person colours: nothing to compare
    assert back_of_head_colour(np.full((10, 10, 3), 255, np.uint8), {})["colour"] is None  # nothing rendered


def test_view_faces_finds_the_photo_face_and_nothing_on_a_blank_view():
    views = np.stack([astronaut()[:256, 100:356], np.full((256, 256, 3), 255, np.uint8)])
    face, blank = view_faces(views, [-22.5, 180.0])
    assert face["azimuth"] == -22.5 and face["dlib"] and face["yunet"] > 0.8
    assert blank == {"azimuth": 180.0, "dlib": False, "yunet": None}
