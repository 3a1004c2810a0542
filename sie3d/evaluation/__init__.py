"""Judging finished run directories: feature extractors, metrics (ID, NPS, FID/KID), the evaluator
over runs, the ablations' definitions (the grid itself runs in :mod:`sie3d.batch`) and the comparison
with the paper's tables.

Sits above generation: may import every stage and :mod:`sie3d.generate`, but nothing below imports it.
"""
