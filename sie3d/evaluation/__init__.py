"""Judging finished run directories: feature extractors, metrics (ID, NPS, FID/KID), the evaluator
over runs, the ablations' definitions (the grid itself runs in :mod:`sie3d.batch`), the comparison
with the paper's tables, and the book pages' tables and figures (:mod:`~sie3d.evaluation.report`,
:mod:`~sie3d.evaluation.ablation_report`).

Sits above generation: may import every stage and :mod:`sie3d.generate`, but nothing below imports it.
"""
