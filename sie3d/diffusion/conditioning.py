"""Conditioning embeddings: paper eq 2, 4, 5, 6, their hierarchy, Perp-Neg view weights, CFG batch order.

All embeddings are ``[77, D]`` CLIP sequences (D = 768 for Arc2Face; the tiny prior's width offline).

* eq 2  :func:`view_blend`       c_d = b·c_default + (1−b)·E_SD("<view> view")
* eq 4/5 :func:`attribute_blend` c_attr = (1−γ)·base + γ·E_SD(attribute text)
* eq 6  :func:`intensity_blend`  c_final = (1−η)·c_neutral + η·c_target

Hierarchy (``conditioning.mode``):

* ``paper`` -- the positive chain of the paper (sec 2.3): for each view d, c_d (eq 2) is the base of the
  expression blend (eq 4, with intensity eq 6 from the neutral expression), whose result is the base of
  the accessory blend (eq 5, with intensity eq 6 from "no accessory" = the base itself). Perp-Neg then
  mixes the chained front/side/back embeddings by azimuth (:func:`perp_neg_view_mix`), negatives are the
  chained embeddings of the other views.
* ``released-code`` -- the arrangement of the released SIE3D code: expression and accessory entries are
  blended from c_default (not chained); the positive is the last stage's intensity blend, and the
  previous stage (the azimuth-mixed view embedding, or the expression blend when an accessory is set)
  becomes a Perp-Neg negative with weight −0.6, beside the stage's neutral entry with weight −1 while
  η < 0.7 (else 0). The view-dependent negatives are dropped.

``conditioning.semantic_embedding = false`` (the "w/o semantic embedding" ablation) keeps only the view
blend with its Perp-Neg negatives (Arc2Avatar's conditioning), whatever the mode.

Classifier-free guidance batches are built only by :func:`cfg_batch` and split only by :func:`split_cfg`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

#: the three view prompts' names, in a fixed order
VIEWS = ("front", "side", "back")
MODES = ("paper", "released-code")


# --------------------------------------------------------------------------- the equations


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def view_blend(c_default: torch.Tensor, e_view: torch.Tensor, b: float) -> torch.Tensor:
    """Paper eq 2: c_d = b·c_default + (1−b)·E_SD(view). Tensors ``[..., 77, D]``; b in [0, 1]."""
    _check_unit("b (view blend)", b)
    return b * c_default + (1.0 - b) * e_view


def attribute_blend(base: torch.Tensor, e_attribute: torch.Tensor, gamma: float) -> torch.Tensor:
    """Paper eq 4 (expression) and eq 5 (accessory): (1−γ)·base + γ·E_SD(attribute). γ in [0, 1]."""
    _check_unit("gamma (attribute blend)", gamma)
    return (1.0 - gamma) * base + gamma * e_attribute


def intensity_blend(c_neutral: torch.Tensor, c_target: torch.Tensor, eta: float) -> torch.Tensor:
    """Paper eq 6: (1−η)·c_neutral + η·c_target. η in [0, 1] (0: neutral, 1: full target)."""
    _check_unit("eta (intensity)", eta)
    return (1.0 - eta) * c_neutral + eta * c_target


def cosine_similarity_matrix(embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[N, N]`` cosine similarities of N embeddings, each flattened (``[77, D]`` -> 77·D values)."""
    flat = torch.stack([e.flatten().double() for e in embeddings])
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (flat @ flat.T).float()


# --------------------------------------------------------------------------- Perp-Neg view weights


@dataclass(frozen=True)
class ViewMix:
    """How one camera azimuth mixes the view embeddings (Perp-Neg, Arc2Avatar / stable-dreamfusion).

    positive = r·E[pair[0]] + (1−r)·E[pair[1]]; negatives E[negatives[i]] with ``weights[i]`` (≤ 0).
    """

    pair: tuple[str, str]
    r: float
    negatives: tuple[str, str]
    weights: tuple[float, float]


def wrap_azimuth(azimuth_deg: float) -> float:
    """Azimuth in degrees wrapped to [−180, 180); 0 = front, ±90 = sides, ±180 = back."""
    return (float(azimuth_deg) + 180.0) % 360.0 - 180.0


def perp_neg_view_mix(azimuth_deg: float, negative_weight: float = -2.0, front_decay: float = 2.0,
                      side_decay: float = 10.0) -> ViewMix:
    """Perp-Neg view interpolation and negative weights for one azimuth (degrees, 0 = front).

    Front hemisphere (|az| < 90°): r = 1 − |az|/90, positive r·front + (1−r)·side; the front negative
    weighs 0 if r > 0.8 else exp(−front_decay·r)·w, the side negative 0 if r < 0.2 else
    exp(−side_decay·(1−r))·w. Back hemisphere: r = 1 − (|az| − 90)/90, positive r·side + (1−r)·back;
    the side negative weighs 0 if r > 0.8 else exp(−side_decay·r)·w/2, the front negative w.
    """
    az = wrap_azimuth(azimuth_deg)
    w = negative_weight
    if -90.0 <= az < 90.0:
        r = 1.0 - abs(az) / 90.0
        front_w = 0.0 if r > 0.8 else math.exp(-front_decay * r) * w
        side_w = 0.0 if r < 0.2 else math.exp(-side_decay * (1.0 - r)) * w
        return ViewMix(("front", "side"), r, ("front", "side"), (front_w, side_w))
    r = 1.0 - (abs(az) - 90.0) / 90.0
    side_w = 0.0 if r > 0.8 else math.exp(-side_decay * r) * w / 2.0
    return ViewMix(("side", "back"), r, ("side", "front"), (side_w, w))


# --------------------------------------------------------------------------- CFG batch order


def cfg_batch(uncond: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """THE classifier-free-guidance batch order: slot-major, ``[(1+K)·B, ...]``.

    Row ``k·B + b`` holds slot k of view b; slot 0 is the unconditional entry, slots 1..K the K
    conditionings (positive first, then the Perp-Neg negatives). Used for latents and embeddings alike.

    Args:
        uncond: ``[B, ...]``.
        cond: ``[B, K, ...]``.
    """
    if cond.shape[0] != uncond.shape[0] or cond.shape[2:] != uncond.shape[1:]:
        raise ValueError(f"cfg_batch: uncond {tuple(uncond.shape)} and cond {tuple(cond.shape)} disagree")
    return torch.cat([uncond[None], cond.transpose(0, 1)], dim=0).flatten(0, 1)


def split_cfg(batch: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`cfg_batch`: ``[(1+K)·B, ...]`` -> (uncond ``[B, ...]``, cond ``[B, K, ...]``)."""
    if batch.shape[0] % views:
        raise ValueError(f"split_cfg: {batch.shape[0]} rows is not a multiple of {views} views")
    slots = batch.unflatten(0, (batch.shape[0] // views, views))  # [1+K, B, ...]
    return slots[0], slots[1:].transpose(0, 1)


# --------------------------------------------------------------------------- the conditioning object


@dataclass
class CameraConditioning:
    """Per-camera guidance inputs: K embeddings per view and their Perp-Neg weights.

    Attributes:
        embeddings: ``[B, K, 77, D]``; slot 0 the positive, slots 1.. the negatives.
        weights: ``[B, K]``; slot 0 is 1, negatives ≤ 0 (0 switches a negative off).
        labels: K names of the slots for display, e.g. ``("positive", "neg front", "neg side")``.
    """

    embeddings: torch.Tensor
    weights: torch.Tensor
    labels: list[list[str]]


@dataclass
class Conditioning:
    """All embeddings of one identity + prompt setting (built by :func:`build_conditioning`).

    Attributes:
        c_default: ``[77, D]`` ID-injected identity embedding (Arc2Face encoder).
        text: prompt -> ``[77, D]`` E_SD embedding, filled on demand.
        uncond: E_SD(negative prompt), the CFG baseline. ``inversion``: E_SD(inversion prompt), for DDIM inversion.
        cfg: the ConditioningConfig these embeddings follow.
    """

    c_default: torch.Tensor
    text: dict[str, torch.Tensor]
    uncond: torch.Tensor
    inversion: torch.Tensor
    cfg: object
    encode_text: Callable[[list[str]], torch.Tensor]
    _finals: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    # -------------------------------------------------------------- dictionaries

    def text_embedding(self, prompt: str) -> torch.Tensor:
        """E_SD(prompt) ``[77, D]`` (encoded once, then kept)."""
        if prompt not in self.text:
            self.text[prompt] = self.encode_text([prompt])[0].to(self.c_default)
        return self.text[prompt]

    def view_embedding(self, view: str, base: torch.Tensor | None = None) -> torch.Tensor:
        """Eq 2 for ``view`` in ``VIEWS`` on ``base`` (default c_default)."""
        if view not in self.cfg.view_prompts:
            raise KeyError(f"unknown view {view!r}; conditioning.view_prompts has {list(self.cfg.view_prompts)}")
        base = self.c_default if base is None else base
        return view_blend(base, self.text_embedding(self.cfg.view_prompts[view]), self.cfg.view_blend)

    def expression_embedding(self, emotion: str, base: torch.Tensor | None = None) -> torch.Tensor:
        """Eq 4 for any emotion word: (1−γ_expr)·base + γ_expr·E_SD(template.format(emotion))."""
        prompt = self.cfg.expression_template.format(emotion)
        base = self.c_default if base is None else base
        return attribute_blend(base, self.text_embedding(prompt), self.cfg.gamma_expr)

    def accessory_embedding(self, accessory: str, base: torch.Tensor | None = None) -> torch.Tensor:
        """Eq 5 for any free-text accessory: (1−γ_acc)·base + γ_acc·E_SD(accessory)."""
        base = self.c_default if base is None else base
        return attribute_blend(base, self.text_embedding(accessory), self.cfg.gamma_acc)

    @property
    def views(self) -> dict[str, torch.Tensor]:
        """Eq 2 dictionary: view -> c_view."""
        return {v: self.view_embedding(v) for v in self.cfg.view_prompts}

    @property
    def expressions(self) -> dict[str, torch.Tensor]:
        """Eq 4 dictionary over ``conditioning.emotions`` (blended from c_default)."""
        return {e: self.expression_embedding(e) for e in self.cfg.emotions}

    @property
    def accessories(self) -> dict[str, torch.Tensor]:
        """Eq 5 dictionary over ``conditioning.accessories`` (blended from c_default)."""
        return {a: self.accessory_embedding(a) for a in self.cfg.accessories}

    # -------------------------------------------------------------- the paper's hierarchy

    def chain(self, view: str) -> dict[str, torch.Tensor]:
        """The paper's positive chain for one view: every stage, ``[77, D]`` each.

        Keys: ``view`` (eq 2), ``neutral`` / ``target`` (eq 4 on the view embedding),
        ``expression`` (eq 6), ``accessory`` (eq 5 on the expression stage, eq 6 from no accessory;
        equal to ``expression`` when no accessory is set) and ``final``.
        """
        cfg = self.cfg
        stages = {"view": self.view_embedding(view)}
        if not cfg.semantic_embedding:
            stages["final"] = stages["view"]
            return stages
        stages["neutral"] = self.expression_embedding(cfg.neutral_expression, base=stages["view"])
        stages["target"] = self.expression_embedding(cfg.expression, base=stages["view"])
        stages["expression"] = intensity_blend(stages["neutral"], stages["target"], cfg.eta_expr)
        if cfg.accessory:
            with_acc = self.accessory_embedding(cfg.accessory, base=stages["expression"])
            stages["accessory"] = intensity_blend(stages["expression"], with_acc, cfg.eta_acc)
        else:
            stages["accessory"] = stages["expression"]
        stages["final"] = stages["accessory"]
        return stages

    def final(self, view: str) -> torch.Tensor:
        """c_final for a view in ``paper`` mode (the chain's last stage), cached."""
        if view not in self._finals:
            self._finals[view] = self.chain(view)["final"]
        return self._finals[view]

    # -------------------------------------------------------------- per camera

    def view_mix(self, azimuth_deg: float) -> ViewMix:
        cfg = self.cfg
        return perp_neg_view_mix(azimuth_deg, cfg.perp_neg_weight, cfg.front_decay, cfg.side_decay)

    def _released_code_slots(self, mix: ViewMix) -> tuple[list[torch.Tensor], list[float], list[str]]:
        cfg = self.cfg
        c_view = self.views
        view_pos = mix.r * c_view[mix.pair[0]] + (1 - mix.r) * c_view[mix.pair[1]]
        neutral = self.expression_embedding(cfg.neutral_expression)
        expr_pos = intensity_blend(neutral, self.expression_embedding(cfg.expression), cfg.eta_expr)

        def neutral_weight(eta: float) -> float:
            return cfg.released_neutral_weight if eta < cfg.released_neutral_eta_threshold else 0.0

        if cfg.accessory:
            none = self.accessory_embedding(cfg.no_accessory_prompt)
            positive = intensity_blend(none, self.accessory_embedding(cfg.accessory), cfg.eta_acc)
            return ([positive, none, expr_pos], [1.0, neutral_weight(cfg.eta_acc), cfg.released_previous_stage_weight],
                    ["accessory blend", f"neg {cfg.no_accessory_prompt!r}", "neg expression stage"])
        return ([expr_pos, neutral, view_pos], [1.0, neutral_weight(cfg.eta_expr), cfg.released_previous_stage_weight],
                ["expression blend", f"neg {cfg.neutral_expression}", "neg view stage"])

    def camera_slots(self, azimuth_deg: float) -> tuple[list[torch.Tensor], list[float], list[str]]:
        """Embeddings ``K × [77, D]``, weights and labels of one camera (K = 3: positive + 2 negatives)."""
        mix = self.view_mix(azimuth_deg)
        if self.cfg.mode == "released-code" and self.cfg.semantic_embedding:
            return self._released_code_slots(mix)
        embed = self.final if self.cfg.semantic_embedding else self.view_embedding
        positive = mix.r * embed(mix.pair[0]) + (1 - mix.r) * embed(mix.pair[1])
        return ([positive, embed(mix.negatives[0]), embed(mix.negatives[1])], [1.0, *mix.weights],
                [f"{mix.r:.2f}·{mix.pair[0]} + {1 - mix.r:.2f}·{mix.pair[1]}",
                 f"neg {mix.negatives[0]}", f"neg {mix.negatives[1]}"])

    def for_cameras(self, azimuth_deg: torch.Tensor | Sequence[float]) -> CameraConditioning:
        """Per-camera embeddings ``[B, K, 77, D]`` and Perp-Neg weights ``[B, K]`` for azimuths ``[B]`` (degrees)."""
        azimuths = torch.as_tensor(azimuth_deg, dtype=torch.float64, device="cpu").reshape(-1).tolist()
        slots = [self.camera_slots(a) for a in azimuths]
        embeddings = torch.stack([torch.stack(e) for e, _, _ in slots])
        weights = torch.tensor([w for _, w, _ in slots], dtype=torch.float32, device=embeddings.device)
        return CameraConditioning(embeddings, weights, [labels for _, _, labels in slots])

    def retarget(self, **changes) -> "Conditioning":
        """The same identity and text embeddings with some config fields changed (e.g. ``expression="happy"``)."""
        cfg = dataclasses.replace(self.cfg, **changes)
        validate_conditioning_config(cfg)
        return dataclasses.replace(self, cfg=cfg, _finals={})


def validate_conditioning_config(cfg) -> None:
    """Raise ValueError naming the bad ``conditioning.*`` value."""
    if cfg.mode not in MODES:
        raise ValueError(f"conditioning.mode={cfg.mode!r}; use one of {MODES}")
    for name in ("view_blend", "gamma_expr", "gamma_acc", "eta_expr", "eta_acc"):
        _check_unit(f"conditioning.{name}", getattr(cfg, name))
    if not cfg.expression.strip():
        raise ValueError("conditioning.expression is empty; use an emotion word such as 'neutral' or 'happy'")
    if "{}" not in cfg.expression_template:
        raise ValueError(f"conditioning.expression_template={cfg.expression_template!r} needs a '{{}}' for the emotion")
    missing = [v for v in VIEWS if v not in cfg.view_prompts]
    if missing:
        raise ValueError(f"conditioning.view_prompts lacks {missing}; Perp-Neg needs front, side and back")


def build_conditioning(prior, id_embedding: torch.Tensor, cond_cfg) -> Conditioning:
    """Encode the identity and every prompt the config names; returns a :class:`Conditioning`.

    Args:
        prior: a :class:`sie3d.diffusion.prior.DiffusionPrior` (its tokenizer, E_SD and ID encoder are used).
        id_embedding: ``[d]`` identity vector (512-d ArcFace for Arc2Face; any size for the tiny prior).
        cond_cfg: ``config.conditioning``.
    """
    validate_conditioning_config(cond_cfg)
    c_default = prior.encode_identity(id_embedding, cond_cfg.id_prompt)
    prompts = [*cond_cfg.view_prompts.values(), *(cond_cfg.expression_template.format(e) for e in
               dict.fromkeys([*cond_cfg.emotions, cond_cfg.neutral_expression, cond_cfg.expression])),
               *cond_cfg.accessories, cond_cfg.negative_prompt, cond_cfg.inversion_prompt]
    if cond_cfg.accessory:
        prompts.append(cond_cfg.accessory)
    if cond_cfg.mode == "released-code":
        prompts.append(cond_cfg.no_accessory_prompt)
    prompts = list(dict.fromkeys(prompts))
    text = dict(zip(prompts, prior.encode_text(prompts).to(c_default)))
    return Conditioning(c_default=c_default, text=text, uncond=text[cond_cfg.negative_prompt],
                        inversion=text[cond_cfg.inversion_prompt], cfg=cond_cfg, encode_text=prior.encode_text)
