"""Face analysis of photos and renders: detection, alignment, 68 landmarks, identity embeddings and
the emotion classifiers (fer, face-api, DeepFace) with the perceptual expression loss built on them;
the registries of detectors, identity encoders and emotion classifiers; and the face readout
(:mod:`sie3d.face.readout`) through which run summaries and the evaluator read faces.

Owns everything that looks at a face image. May import only the base modules (``sie3d.config``,
``sie3d.vocabulary``, ``sie3d.registry``, ``sie3d.runtime``, ``sie3d.run_dir``, ``sie3d.weights``,
``sie3d.images``); it knows nothing of diffusion, avatars or rendering.
"""
