"""Judging finished run directories: feature extractors, metrics (ID, NPS, FID/KID), the evaluator
over runs, the ablation grid, the comparison with the paper's tables, and the book pages' tables and
figures (:mod:`~sie3d.evaluation.report`, :mod:`~sie3d.evaluation.ablation_report`).

Sits above generation: may import every stage and :mod:`sie3d.generate` (the ablation grid builds
its runs), but nothing below imports it.
"""
