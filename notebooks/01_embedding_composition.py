# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Embedding composition: identity, view, expression, accessory
#
# The diffusion prior (Arc2Face) is steered by one **conditioning embedding**: a sequence of 77
# token vectors of width $D$ ($D = 768$ for Arc2Face) that the UNet's cross-attention reads. SIE3D
# builds it in four steps (paper sec 2.2-2.3):
#
# 1. **Identity.** The ArcFace vector $v$ of the photo is injected into the prompt
#    "photo of a id person": the input embedding of the token `id` is replaced by $v$ (unit 512-d,
#    zero-padded to 768), and the Arc2Face-finetuned CLIP text encoder turns the sequence into
#    $c_{default}$.
# 2. **View** (eq 2): $c_d = b\,c_{default} + (1-b)\,E_{SD}(\text{"front/side/back view"})$, $b = 0.9$.
# 3. **Expression / accessory** (eq 4, 5): $c = (1-\gamma)\,\text{base} + \gamma\,E_{SD}(\text{text})$,
#    $\gamma = 0.2$, for any emotion word ("happy expression") or free accessory text ("wearing glasses").
# 4. **Intensity** (eq 6): $c_{expr\text{-}final} = (1-\eta)\,c_{neutral} + \eta\,c_{target}$, $\eta = 0.8$.
#
# The paper chains them: the view embedding is the base of the expression blend, whose result is
# the base of the accessory blend. The released SIE3D code arranges the same pieces differently
# (as Perp-Neg negatives); this page shows both, and the view-dependent Perp-Neg weights that mix
# the front / side / back embeddings for each camera.

# %% tags=["parameters", "hide-input"]
params_file = "../params/quick.yaml"
extra_params = []
overrides = []
output_dir = "../runs/notebooks/01_embedding_composition"
interactive = False

# %%
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import skimage.data
import torch

from sie3d.diffusion.conditioning import build_conditioning, cosine_similarity_matrix, intensity_blend, perp_neg_view_mix
from sie3d.config import load_config
from sie3d.face.detect import FaceWarning, detect_faces, select_face
from sie3d.face.identity import make_identity_encoder
from sie3d.diffusion.prior import DiffusionPrior
from sie3d.runtime import resolve_device, seed_everything
from sie3d.diffusion.text_encoders import tokenize

config = load_config(params_file, *extra_params, overrides=overrides)
seed_everything(config.run.seed)
device = resolve_device(config.run.device)
out_dir = Path(output_dir)
out_dir.mkdir(parents=True, exist_ok=True)
prior = DiffusionPrior.from_config(config, device)
print("prior:", prior.describe())
if prior.profile == "tiny":
    print("\nNOTE: these figures come from the offline 'tiny' profile, whose CLIP text encoders are small random\n"
          "networks: they show how the embeddings are composed (which blend feeds which), not what\n"
          "Arc2Face's encoders make of the words. Similarities between text embeddings carry no meaning here.")

# %% [markdown]
# :::{admonition} With a GPU and the real weights
# :class: tip
# Run this page with `params/paper.yaml` (after `sie3d weights download --all`): the identity is then
# ArcFace's 512-d vector (SCRFD detection), $c_{default}$ comes from the Arc2Face ID encoder and every
# text embedding from SD-1.5's CLIP ViT-L/14 encoder ($D = 768$). The code path is the same; only the
# weights change, and the similarity structure between "happy", "sad", "surprise", ... becomes the
# language model's. The text encoders run once per prompt (cached on disk), so a CPU is enough for this page.
# :::

# %% [markdown]
# ## The identity vector and where it enters
#
# The photo is scikit-image's public-domain astronaut portrait. The preset picks the face detector and
# identity encoder: offline that is dlib (128-d descriptor), with real weights ArcFace (512-d). The
# vector has to fit the encoder's token width: Arc2Face zero-pads 512 → 768 (exactly as it was trained);
# the tiny encoder is narrower than dlib's vector, so a fixed seeded projection with orthonormal rows
# maps it down (`sie3d.diffusion.text_encoders.fit_identity_to_hidden` says which one it used).

# %%
photo = skimage.data.astronaut()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FaceWarning)  # dlib also fires weakly on the suit; the best face is kept
    face = select_face(detect_faces(photo, config.models.face_detector))
    face_flipped = select_face(detect_faces(np.ascontiguousarray(photo[:, ::-1]), config.models.face_detector))
encoder = make_identity_encoder(config.models.identity)
identity = torch.from_numpy(encoder.embed(photo, face))
identity_flipped = torch.from_numpy(encoder.embed(np.ascontiguousarray(photo[:, ::-1]), face_flipped))
random_identity = torch.randn(identity.numel(), generator=torch.Generator().manual_seed(1))
token = prior.identity_token(identity)
print(f"identity: {config.models.identity}, {identity.numel()}-d, |v| = {identity.norm():.3f}")
print(f"fitted to the ID encoder's width {token.vector.numel()} by '{token.method}'")
print(f"cos(identity, identity of the mirrored photo) = {float(identity @ identity_flipped):.3f}   "
      f"cos(identity, random vector) = {float(identity @ random_identity / random_identity.norm()):+.3f}")

ids = tokenize(prior.tokenizer, [config.conditioning.id_prompt])[0]
tokens = prior.tokenizer.convert_ids_to_tokens(ids[:8].tolist())
print("\nprompt tokens:", list(zip(range(8), tokens)), "... padded with <|endoftext|> to 77")

# %% [markdown]
# CLIP's text encoder is causal: token $i$ only attends to tokens $\le i$. Replacing the `id` token
# (position 4) therefore leaves positions 0-3 untouched and changes every later position, including
# the 70-odd padding positions, which the UNet also reads. The curve below compares $c_{default}$ of
# the astronaut with $c_{default}$ of her mirrored photo (same person, second embedding) and of a
# random vector.

# %%
c_default = prior.encode_identity(identity, config.conditioning.id_prompt)
others = {"mirrored photo": prior.encode_identity(identity_flipped, config.conditioning.id_prompt),
          "random vector": prior.encode_identity(random_identity, config.conditioning.id_prompt)}
fig, ax = plt.subplots(figsize=(9, 3))
for name, other in others.items():
    per_token = torch.nn.functional.cosine_similarity(c_default, other, dim=-1).cpu()
    ax.plot(per_token, marker=".", label=f"astronaut vs {name}")
ax.axvline(4, color="grey", ls=":", label="`id` token")
ax.set(xlabel="token position", ylabel="cosine similarity", title="c_default: where the identity changes the sequence")
ax.legend(fontsize=8)
fig.savefig(out_dir / "identity_tokens.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## The dictionaries (eq 2, 4, 5)
#
# All entries are blends with $c_{default}$ at $b = 0.9$ or $1-\gamma = 0.8$: the identity dominates
# every one of them, so their raw cosine similarities are all close to 1 (left, coloured on its own
# scale from the smallest value to 1). Even so two blocks show: the three view entries (10 % text)
# are close to each other and farther from the expression and accessory entries (20 % text), which
# are close among themselves. What tells the
# entries apart is small: centred on the dictionary's mean $\bar c$, the differences
# $c_i - \bar c = \gamma\,(E_{SD}(\text{text}_i) - \overline{E_{SD}})$ (for same-γ entries) show how the
# words relate (right). With the tiny profile that structure only reflects shared tokens
# ("... view", "... expression"); with SD-1.5's encoder it is the language model's.

# %%
conditioning = build_conditioning(prior, identity, config.conditioning)
cfg = conditioning.cfg
entries = {**{f"view: {k}": v for k, v in conditioning.views.items()},
           **{f"expr: {k}": v for k, v in conditioning.expressions.items()},
           **{f"acc: {k}": v for k, v in conditioning.accessories.items()}}
names = list(entries)
mean_entry = torch.stack(list(entries.values())).mean(0)
raw = cosine_similarity_matrix(list(entries.values())).cpu()
centred = cosine_similarity_matrix([v - mean_entry for v in entries.values()]).cpu()
fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
# the raw panel on its own scale (min … 1): on −1 … 1 every raw cell would be one colour
for ax, matrix, title, scale in [
        (axes[0], raw, f"cos(c_i, c_j), scale {float(raw.min()):.4f} … 1",
         dict(vmin=float(raw.min()), vmax=1.0, cmap="viridis")),
        (axes[1], centred, "cos(c_i − c̄, c_j − c̄), scale −1 … 1", dict(vmin=-1, vmax=1, cmap="RdBu_r"))]:
    im = ax.imshow(matrix, **scale)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.7)
fig.savefig(out_dir / "dictionary_similarity.png", dpi=80, bbox_inches="tight")
print(f"raw similarities: min {raw.min():.4f}; centred: min {centred.min():+.3f}, max off-diagonal "
      f"{(centred - 2 * torch.eye(len(names))).max():+.3f}")

# %% [markdown]
# Each entry is one function named after its equation, and each is linear: a hand check on the
# front view and "happy" confirms the dictionary holds exactly eq 2 and eq 4.

# %%
e_front = conditioning.text_embedding(cfg.view_prompts["front"])
e_happy = conditioning.text_embedding(cfg.expression_template.format("happy"))
assert torch.allclose(conditioning.views["front"], cfg.view_blend * c_default + (1 - cfg.view_blend) * e_front)
assert torch.allclose(conditioning.expression_embedding("happy"),
                      (1 - cfg.gamma_expr) * c_default + cfg.gamma_expr * e_happy)
print("eq 2 and eq 4 entries match their hand-written formulas; any word works, e.g. 'bored':",
      tuple(conditioning.expression_embedding("bored").shape))

# %% [markdown]
# ## Intensity paths (eq 6)
#
# $\eta$ slides from the neutral entry ($\eta = 0$) to the target entry ($\eta = 1$) along a straight
# line. The distance to the neutral embedding grows linearly, and the cosine similarity to the target
# rises to 1. The paper gives no value of $\eta$; $\eta = 0.8$ (the dotted line) is the released
# code's, which the presets use.

# %%
etas = np.linspace(0, 1, 21)
neutral = conditioning.expression_embedding(cfg.neutral_expression)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for emotion in ["happy", "sad", "surprise", "angry"]:
    target = conditioning.expression_embedding(emotion)
    path = [intensity_blend(neutral, target, float(eta)) for eta in etas]
    axes[0].plot(etas, [float((c - neutral).norm()) for c in path], label=emotion)
    axes[1].plot(etas, [float(cosine_similarity_matrix([c - c_default, target - c_default])[0, 1]) for c in path],
                 label=emotion)
for ax in axes:
    ax.axvline(cfg.eta_expr, color="grey", ls=":")
    ax.set_xlabel("η")
axes[0].set(ylabel="‖c(η) − c_neutral‖", title="distance from neutral")
axes[1].set(ylabel="cos(c(η) − c_default, c_target − c_default)", title="direction toward the target")
axes[0].legend(fontsize=8)
fig.savefig(out_dir / "intensity_paths.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## View-dependent Perp-Neg weights
#
# Each camera gets one positive embedding (the two nearest views mixed by azimuth) and two negatives
# whose components perpendicular to the positive are pushed away (Perp-Neg, weight $w = -2$). In the
# front hemisphere $r = 1 - |az|/90°$ mixes front and side; behind, side and back, with the front
# always negated.

# %%
azimuths = np.linspace(-180, 180, 361)
mixes = [perp_neg_view_mix(a, cfg.perp_neg_weight, cfg.front_decay, cfg.side_decay) for a in azimuths]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
for view, colour in [("front", "tab:blue"), ("side", "tab:orange"), ("back", "tab:green")]:
    share = [dict(zip(m.pair, (m.r, 1 - m.r))).get(view, 0.0) for m in mixes]
    axes[0].plot(azimuths, share, color=colour, label=view)
    axes[1].plot(azimuths, [dict(zip(m.negatives, m.weights)).get(view, 0.0) for m in mixes], color=colour,
                 label=f"negative: {view}")
axes[0].set(xlabel="azimuth (°)", ylabel="share in the positive", title="positive = mix of the view embeddings")
axes[1].set(xlabel="azimuth (°)", ylabel="Perp-Neg weight", title="negative weights by azimuth")
for ax in axes:
    ax.legend(fontsize=8)
fig.savefig(out_dir / "perp_neg_weights.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## The hierarchy: paper chain vs released code
#
# Target: "happy" at $\eta = 0.8$ with "wearing glasses". In **paper** mode every view embedding is
# the base of the expression blend, whose result is the base of the accessory blend; the stages drift
# step by step from $c_{default}$. In **released-code** mode the expression and accessory entries are
# blended from $c_{default}$ directly, the positive is only the accessory blend, and the view and
# expression stages appear as negatives.

# %%
paper = conditioning.retarget(mode="paper", expression="happy", accessory="wearing glasses")
released = conditioning.retarget(mode="released-code", expression="happy", accessory="wearing glasses")
stages = paper.chain("front")
print("paper chain, front view: distance of each stage from c_default")
for name in ["view", "neutral", "target", "expression", "accessory"]:
    print(f"  {name:10s} ‖c − c_default‖ = {float((stages[name] - c_default).norm()):.4f}")

for label, cond in [("paper", paper), ("released-code", released)]:
    print(f"\n{label}: slots per camera (embedding, Perp-Neg weight)")
    for azimuth in [0.0, 45.0, 120.0, 180.0]:
        embeddings, weights, labels = cond.camera_slots(azimuth)
        text = ";  ".join(f"{lab} ({w:+.2f})" for lab, w in zip(labels, weights))
        print(f"  az {azimuth:5.0f}°: {text}")

# %% [markdown]
# How do the arrangements react to the camera? Below: how far each mode's positive embedding moves
# from its frontal value as the camera goes around the head, and the weight each mode gives to its
# view-carrying negative. In the released code the positive does not depend on the azimuth at all
# (the view only enters as a negative with a fixed weight), so side and back views are steered by
# the negatives alone.

# %%
sweep = np.linspace(-180, 180, 73)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
for label, cond in [("paper", paper), ("released-code", released)]:
    front_positive = cond.camera_slots(0.0)[0][0]
    slots = [cond.camera_slots(float(a)) for a in sweep]
    axes[0].plot(sweep, [float((e[0] - front_positive).norm()) for e, _, _ in slots], label=label)
    axes[1].plot(sweep, [min(w[1:]) for _, w, _ in slots], label=label)
axes[0].set(xlabel="azimuth (°)", ylabel="‖positive(az) − positive(0°)‖", title="the positive embedding")
axes[1].set(xlabel="azimuth (°)", ylabel="most negative weight", title="the strongest negative")
for ax in axes:
    ax.legend(fontsize=8)
fig.savefig(out_dir / "paper_vs_released.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## Summary
#
# * $c_{default}$ carries the identity from position 4 (`id`) onward; the 512-d ArcFace vector enters
#   unscaled and zero-padded (the tiny profile projects the dlib vector instead, and says so).
# * Eq 2, 4, 5 and 6 are linear blends; with $b = 0.9$, $\gamma = 0.2$ the identity dominates every
#   entry, and the words act through small differences to $c_{default}$.
# * Per camera the guidance receives $K = 3$ embeddings (positive + two negatives) and their Perp-Neg
#   weights; one function (`cfg_batch`) lays out the unconditional and conditional rows for the UNet.
# * `conditioning.mode` switches between the paper's positive chain and the released code's
#   arrangement (`params/ablations/released_code_conditioning.yaml`).
