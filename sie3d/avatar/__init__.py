"""The 3D head: templates (built-in head, meshes, FLAME), the photo's expression fit and its reference
view, Gaussians bound to the mesh's faces, the densify / prune strategy and the ``.ply`` export.

May import the base modules, :mod:`sie3d.render` (cameras, splats, rasterizer outputs) and
:mod:`sie3d.face` (landmarks and alignment of the photo); never training, generation or evaluation.
"""
