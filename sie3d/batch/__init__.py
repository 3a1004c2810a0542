"""The one grid runner: every grid of runs (``sie3d batch`` manifests, ``sie3d ablations``, the η sweeps
of ``sie3d generate``, the notebooks' grids) is a list of cells (:class:`.manifest.BatchRun`: who,
which :class:`sie3d.request.Request`, which params, where) run by :func:`.engine.run_batch`, serially
in this process or on Ray actors that keep their models loaded, resumably; it then evaluates the
finished runs.

Sits beside the CLI, above generation and evaluation: may import every stage, :mod:`sie3d.generate`
and :mod:`sie3d.evaluation`; the commands and the notebooks use it.
"""
