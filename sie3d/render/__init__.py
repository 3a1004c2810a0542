"""From Gaussians to pixels: cameras and their sampling, the splat container, the rasterizers (dense
reference, tiled PyTorch, compiled C++ for CPUs in ``csrc/``, gsplat on CUDA) and the backend choice,
turntables, view grids and the book's diagrams.

May import only the base modules (``sie3d.config``, ``sie3d.registry``, ``sie3d.runtime``,
``sie3d.weights``, ``sie3d.images``); the avatar stage builds on it, never the other way round.
"""
