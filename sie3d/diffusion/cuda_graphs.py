"""Replay a fixed-shape network pass as a CUDA graph (``models.cuda_graphs``).

An SD-1.5 UNet pass at the paper's batch sizes launches about a thousand small kernels; eager PyTorch
spends longer issuing them from Python than the GPU spends running them. A CUDA graph records the
launches once and replays them with one call. :class:`GraphedCall` keeps one graph per input
signature (shapes and dtypes: the ISM inversion at ``[B, 4, 64, 64]`` and the guided pass at
``[B·(1+K), 4, 64, 64]`` are two graphs), copies each call's inputs into the graph's static buffers,
replays, and returns a copy of the static output.

What it assumes of ``fn``: pure tensors in, one tensor out, no host synchronisation inside (no
``.item()``, no data-dependent Python control flow), and every Python-level setting that changes
the computation (e.g. the LoRA scale) fixed for the life of the graph. Gradients do not flow through a
replay: use it under ``torch.no_grad()`` only (the guidance's UNet passes are).
"""

from __future__ import annotations

from typing import Callable

import torch

Signature = tuple[tuple[tuple[int, ...], torch.dtype], ...]


class GraphedCall:
    """``fn(*inputs)`` replayed as one CUDA graph per input signature (see the module docstring).

    Args:
        fn: the call to record; inputs and output are CUDA tensors.
        warmup: eager calls on a side stream before capture (cuDNN / cuBLAS pick their kernels there).
    """

    def __init__(self, fn: Callable[..., torch.Tensor], warmup: int = 2):
        self.fn = fn
        self.warmup = warmup
        self.graphs: dict[Signature, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}
        self.pool = None  # one memory pool for every graph: they never run at the same time

    @staticmethod
    def signature(inputs: tuple[torch.Tensor, ...]) -> Signature:
        return tuple((tuple(x.shape), x.dtype) for x in inputs)

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = self.signature(inputs)
        if key not in self.graphs:
            self.graphs[key] = self._capture(inputs)
        graph, static_inputs, static_output = self.graphs[key]
        for buffer, value in zip(static_inputs, inputs):
            buffer.copy_(value)
        graph.replay()
        return static_output.clone()

    def _capture(self, inputs: tuple[torch.Tensor, ...]):
        static_inputs = [x.detach().clone() for x in inputs]
        side = torch.cuda.Stream(device=static_inputs[0].device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_output = self.fn(*static_inputs)
        return graph, static_inputs, static_output
