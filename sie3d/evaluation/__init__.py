"""Judging finished run directories: feature extractors, metrics (ID, NPS, FID/KID), the evaluator
over runs, the ablation grid and the comparison with the paper's tables.

Sits above generation: may import every stage and :mod:`sie3d.generate` (the ablation grid builds
its runs), but nothing below imports it.
"""
