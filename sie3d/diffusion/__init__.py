"""The diffusion prior and how it guides the avatar: CLIP tokenizer and text encoders, the Arc2Face /
tiny prior, the conditioning of eqs 2, 4, 5 and 6 (ID injection, view / expression / accessory
dictionaries, intensity paths, Perp-Neg) and the ISM / SDS guidance losses.

May import only the base modules (``sie3d.config``, ``sie3d.vocabulary``, ``sie3d.registry``,
``sie3d.runtime``, ``sie3d.weights``); it works on image tensors and knows nothing of faces, avatars or
rendering.
"""
