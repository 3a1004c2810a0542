"""SIE3D: expressive 3D Gaussian head avatars from one photo plus text (reference implementation)."""

__version__ = "0.1.0"
