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
# # Generating an avatar: one photo + an expression → a 3D Gaussian head
#
# This page runs the whole pipeline, `sie3d.generate.generate`, which is what
#
# ```bash
# sie3d generate photo.png --expression surprise --params params/quick.yaml --out runs/astronaut_surprise
# ```
#
# does: detect and align the face, embed the identity, bind Gaussians to the head template, optimise
# $\sum_k \lambda_k \mathcal{L}_k$ (ISM guidance, emotion loss, $\mathcal{L}_{pos}$, $\mathcal{L}_{lap}$,
# TV of image and depth, mean scale and, in the offline preset, a reference-view loss), then export
# `avatar.ply`, renders, a turntable and `summary.json`.
#
# Two expressions from the parameters cell are generated from the same photo, plus one run with an
# accessory prompt. Each run's numbers are read back from its run directory; finished runs with the
# same params are reused, so re-executing the page only re-draws it.
#
# **Two expression routes.** With real weights (the paper, `params/paper.yaml`), the text embeddings
# steer the Arc2Face prior and the emotion loss back-propagates into every Gaussian parameter. Offline
# (`params/quick.yaml`) the diffusion prior is a small random network that knows nothing about faces,
# so appearance comes from the photo instead: the photo's own expression is fitted as blendshape
# coefficients of the template from its 68 landmarks, the colours are painted from the aligned photo
# and refined by the reference-view loss *at that expression*, and the target expression is reached by
# moving only the blendshape coefficients with the emotion loss (`loss.emotion_moves=expression`).
# The emotion loss never touches a colour, so it cannot paint a pattern that fools the classifier
# (notebook 03 shows how easily that happens).

# %% tags=["parameters"]
params_file = "../params/quick.yaml"
extra_params = []
overrides = []
output_dir = "../runs/notebooks/04_generate"
interactive = False
photo = ""  # a portrait file; empty: the astronaut photo that scikit-image ships
expressions = ["neutral", "surprise"]
accessory = "wearing glasses"  # empty: no accessory run
iterations = 0  # train.iterations of every run; 0: the preset value

# %%
import base64
import logging
import multiprocessing
import shutil
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import imageio.v3 as iio
import matplotlib.pyplot as plt
import numpy as np
import skimage.data
import torch
from IPython.display import HTML, Markdown, display

from sie3d.evaluation.ablations import is_generated, manifest_params_hash
from sie3d.diffusion.conditioning import build_conditioning, cosine_similarity_matrix
from sie3d.config import load_config
from sie3d.face.detect import FaceWarning
from sie3d.generate import configure, generate, load_summary
from sie3d.diffusion.prior import DiffusionPrior
from sie3d.runtime import resolve_device
from sie3d.subject import make_subject
from sie3d.train.trainer import read_metrics

notebook_start = time.perf_counter()
# every logged iteration, for the curves below (logging does not change the optimisation)
run_overrides = [*overrides, "train.log_every=1"] + ([f"train.iterations={iterations}"] if iterations else [])
config = load_config(params_file, *extra_params, overrides=run_overrides)
out_dir = Path(output_dir)
out_dir.mkdir(parents=True, exist_ok=True)
if photo:
    photos, sources = [photo], None
else:
    photos, sources = [skimage.data.astronaut()], ["astronaut (skimage.data, public domain)"]
print(f"preset {config.preset}: {config.train.iterations} iterations x batch {config.train.batch_size} at "
      f"{config.render.resolution}² ({config.render.backend}), prior '{config.models.prior}', "
      f"emotion loss moves '{config.loss.emotion_moves}', lambda_ref {config.loss.lambda_ref}; "
      f"{torch.get_num_threads()} torch threads")
if config.models.prior == "tiny":
    print("NOTE: the 'tiny' prior is a small random network: its ISM gradient carries no face knowledge.")

# %% [markdown]
# ## The runs
#
# One run directory per request under `output_dir`. A directory whose `summary.json` exists and whose
# manifest records the same params hash is read back instead of regenerated; a directory left by an
# interrupted or differently configured run is replaced. On a CPU the missing runs start together,
# each in its own single-threaded worker process (up to four at once, about 2 GB of memory each): the
# operating system shares the cores between independent runs with little overhead, whereas torch
# threads inside one small optimisation wait for each other, and collapse as soon as another program
# competes for a core (9× slower per iteration with 2 threads than with 1, measured on a shared 2-core
# machine).

# %%
requests = {e: (e, "") for e in expressions}
if accessory:
    requests["neutral_" + "_".join(accessory.split())] = ("neutral", accessory)
device = resolve_device(config.run.device)
runs, pending = {}, {}
for name, (expression, accessory_text) in requests.items():
    run_config = configure(config, expression=expression, accessory=accessory_text)
    run_dir = out_dir / name
    if ((run_dir / "summary.json").is_file() and is_generated(run_dir)
            and manifest_params_hash(run_dir) == run_config.params_hash()):
        print(f"{name}: reusing {run_dir}")
        runs[name] = run_dir
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        pending[name] = (run_dir, run_config)

start = time.perf_counter()
# per-iteration lines go to Python logging (silent unless configured); the numbers are read back below
quiet = logging.getLogger("sie3d.notebooks.generate").info
if pending and device.type == "cpu":
    workers = min(len(pending), 4)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {name: pool.submit(generate, photos, run_config, run_dir, sources=sources, log=quiet)
                   for name, (run_dir, run_config) in pending.items()}
        for name, future in futures.items():
            future.result()  # a failed run raises here, with its error
            runs[name] = pending[name][0]
    print(f"generated {', '.join(pending)} in {time.perf_counter() - start:.0f} s "
          f"({workers} single-threaded worker process{'es' if workers > 1 else ''})")
else:  # CUDA: one run after the other in this process
    for name, (run_dir, run_config) in pending.items():
        generate(photos, run_config, run_dir, sources=sources, log=quiet)
        runs[name] = run_dir
generation_seconds = time.perf_counter() - start
runs = {name: (runs[name], load_summary(runs[name])) for name in requests}
for name, (run_dir, summary) in runs.items():
    print(f"{name}: {summary['iterations']} iterations, {summary['seconds_per_iteration']:.2f} s/iteration, "
          f"{summary['wall_seconds']:.0f} s to optimise -> {run_dir}")
metrics = {name: read_metrics(run_dir) for name, (run_dir, _) in runs.items()}

# %% [markdown]
# ## Photo, the avatar at the photo's expression, the avatar at the target expression
#
# Left: the input. Middle: the frontal render with the blendshape coefficients fitted to the photo
# (what the reference-view loss compares with the photo). Right: the final avatar, whose coefficients
# the emotion loss moved toward the target. All renders are 256², from the evaluation camera.

# %%
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FaceWarning)  # the astronaut's suit holds a weak second "face"
    subject = make_subject(photos, config.models, sources)
x0, y0, x1, y1 = subject.face.box
half = int(x1 - x0)  # a square of twice the face box around its centre
cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
height, width = subject.photo.shape[:2]
face_crop = subject.photo[max(cy - half, 0):min(cy + half, height), max(cx - half, 0):min(cx + half, width)]
fig, axes = plt.subplots(len(runs), 3, figsize=(9, 3.2 * len(runs)), squeeze=False)
for row, (name, (run_dir, summary)) in zip(axes, runs.items()):
    panels = [(face_crop, "photo (face crop)"),
              (iio.imread(run_dir / "frontal_photo_expression.png"), "avatar at the photo's expression"),
              (iio.imread(run_dir / "frontal.png"), f"final: {summary['expression']}"
               + (f" + '{summary['accessory']}'" if summary["accessory"] else ""))]
    for ax, (image, title) in zip(row, panels):
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    row[0].set_ylabel(name)
fig.tight_layout()
fig.savefig(out_dir / "photo_vs_frontal.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## Loss curves, target probability, blendshape coefficients
#
# Every logged term unweighted, and the total $\sum_k \lambda_k \mathcal{L}_k$ with the preset's weights
# (dashed). With the tiny prior the ISM term is a random network's opinion and does not settle; the
# reference-view loss falls a little as the painted colours are refined; the emotion loss falls as the
# coefficients move. `p_target` is the loss classifier's probability of the target on the training
# crop of the frontal render, the quantity being optimised, so it is not a measurement: the table below
# reads the final renders again with detection, the evaluation crop and landmarks.

# %%
fig, axes = plt.subplots(len(runs), 3, figsize=(15, 3.4 * len(runs)), squeeze=False)
for row, (name, records) in zip(axes, metrics.items()):
    steps = np.array([r["iteration"] for r in records])
    for key in sorted({k for r in records for k in r if k.startswith("loss_")}):
        values = np.array([r.get(key, np.nan) for r in records], dtype=float)
        total = key == "loss_total"
        row[0].plot(steps, np.where(values > 0, values, np.nan), "k--" if total else "-", lw=1 if total else 1.5,
                    label="total (weighted sum)" if total else key[5:])
    row[0].set_yscale("log")
    row[0].set_title(f"{name}: loss terms (unweighted)")
    row[0].legend(fontsize=7, ncol=2)
    row[1].plot(steps, [r.get("p_target", np.nan) for r in records], color="tab:red")
    row[1].set_ylim(0, 1)
    row[1].set_title(f"{name}: p(target = {runs[name][1]['expression']}) of the loss classifier")
    for key in [k for k in records[0] if k.startswith("expr_")]:
        row[2].plot(steps, [r[key] for r in records], label=key[5:])
    row[2].set_ylim(-0.05, 1.05)
    row[2].set_title(f"{name}: blendshape coefficients")
    row[2].legend(fontsize=7, ncol=2)
    for ax in row:
        ax.set_xlabel("iteration")
fig.tight_layout()
fig.savefig(out_dir / "curves.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## Identity, expression probabilities and landmark measures
#
# The photo, then for each run the frontal render at the photo's expression and the final frontal render.
#
# * **dlib distance**: Euclidean distance between dlib's 128-d face descriptors of the photo and the
#   render; dlib's rule: < 0.6 is the same person.
# * **fer / deepface**: emotion probabilities; `fer` is also the loss classifier of the quick preset
#   (so it cannot be the judge), DeepFace's network is the held-out one when its weights are cached.
# * **landmarks** (dlib's 68-point model, in inter-ocular units): mouth opening, mouth width, mouth-corner
#   lift above the lip centre (> 0: smile) and brow height above the eyes. The optimisation never saw them.

# %%
LANDMARKS = ("mouth_open", "mouth_width", "mouth_corner_lift", "brow_raise")


def table_row(label, report):
    if report.get("face_found") is False:
        return f"| {label} | no face found |" + " |" * (len(LANDMARKS) + 3)
    distance = report.get("dlib_distance")
    cells = ["—" if distance is None else f"{distance:.3f}"]
    for clf in ("fer", "deepface"):
        probs = report.get(f"emotion_{clf}")
        cells.append("—" if probs is None else ", ".join(
            f"{e} {probs[e]:.2f}" for e in sorted(probs, key=probs.get, reverse=True)[:2]))
    cells += [f"{report['landmarks'][k]:+.3f}" for k in LANDMARKS]
    return f"| {label} | " + " | ".join(cells) + " |"


lines = ["| run / image | dlib distance | fer (top 2) | deepface (top 2) | " + " | ".join(LANDMARKS) + " |",
         "|---" * (4 + len(LANDMARKS)) + "|"]
lines.append(table_row("photo", next(iter(runs.values()))[1]["photo"]))
for name, (_, summary) in runs.items():
    lines.append(table_row(f"**{name}**: render at photo's expression", summary["frontal_photo_expression"]))
    lines.append(table_row(f"**{name}**: final render", summary["frontal"]))
display(Markdown("\n".join(lines)))
missing = next(iter(runs.values()))[1]["classifiers_missing"]
for clf, message in missing.items():
    print(f"{clf}: not cached here, column left empty ({message.splitlines()[0]})")

# %% [markdown]
# ## What the landmarks check
#
# The landmark measures are compared between the render at the photo's expression and the final render
# of the same run (same colours, same camera, only the coefficients differ), and expected to move the
# way a person would describe the target: **neutral** from a smiling photo flattens the mouth (corner
# lift and opening fall), **surprise** opens the mouth and raises the brows. Other targets have no
# check here. The verdicts below are computed from the numbers above; a move smaller than 0.02
# inter-ocular units (about one pixel) counts as no change.

# %%
EXPECTED = {"neutral": [("mouth_corner_lift", -1), ("mouth_open", -1)],
            "surprise": [("mouth_open", +1), ("brow_raise", +1)]}
MIN_CHANGE = 0.02  # inter-ocular units, about 1 px in the 256² renders: smaller moves are landmark noise
for name, (_, summary) in runs.items():
    before, after = summary["frontal_photo_expression"], summary["frontal"]
    if not (before.get("face_found") and after.get("face_found")):
        print(f"{name}: no face found in a render, no landmark check")
        continue
    checks = EXPECTED.get(summary["expression"], [])
    verdicts = []
    for key, sign in checks:
        a, b = before["landmarks"][key], after["landmarks"][key]
        moved = sign * (b - a)
        verdict = ("as expected" if moved > MIN_CHANGE else "no clear change" if moved >= -MIN_CHANGE
                   else "the OPPOSITE way")
        verdicts.append(f"{key} {a:+.3f} → {b:+.3f} ({verdict})")
    fer = after.get("emotion_fer", {})
    target = summary["expression"]
    print(f"{name}: dlib distance {after['dlib_distance']:.3f} "
          f"({'same person' if after['dlib_distance'] < 0.6 else 'NOT the same person'} by dlib's 0.6 rule); "
          f"fer p({target}) {before.get('emotion_fer', {}).get(target, float('nan')):.3f} → "
          f"{fer.get(target, float('nan')):.3f}")
    for verdict in verdicts or ["no landmark expectation for this target"]:
        print("   ", verdict)
    coefficients = summary["expression_coefficients"]
    start = summary["photo_expression_coefficients"]
    print("    coefficients (photo → final): " + ", ".join(
        f"{k} {start[k]:.2f}→{v:.2f}" for k, v in coefficients.items() if abs(v - start[k]) > 0.02))

# %% [markdown]
# ## Views and turntables
#
# Front, three-quarter, side and back views of each final avatar, and a 12-frame turntable (the GIF
# is embedded in the page; `turntable.mp4` beside it in the run directory). The back and the sides
# have no photo to learn from: offline they keep the template's colours, moved only by the random
# prior's ISM gradient and the TV terms.

# %%
for name, (run_dir, summary) in runs.items():
    display(Markdown(f"**{name}** ({summary['n_gaussians']} Gaussians, {summary['iterations']} iterations, "
                     f"{summary['seconds_per_iteration']:.2f} s/iteration, peak memory "
                     f"{summary['peak_memory_mb']:.0f} MB)"))
    fig, ax = plt.subplots(figsize=(12, 2.6))
    ax.imshow(iio.imread(run_dir / "views.png"))
    ax.set_axis_off()
    plt.show()
    gif = base64.b64encode((run_dir / "turntable.gif").read_bytes()).decode()
    display(HTML(f'<img src="data:image/gif;base64,{gif}" alt="turntable of {name}" width="192">'))

# %% [markdown]
# ## The accessory prompt
#
# The accessory enters only through the conditioning (paper eq 5 and 6): $c_{final}$ for every view
# is blended toward the CLIP embedding of the accessory text. With real weights that embedding steers
# Arc2Face, and glasses can appear. **Offline no glasses can appear**: the tiny prior is a random
# network, the accessory changes which random gradient ISM gives, and no loss knows what glasses are.
# What the text does change is measurable: the cosine similarity of $c_{final}$ with and without the
# accessory (and, for scale, with another expression), and the difference between the two avatars.

# %%
if accessory:
    prior = DiffusionPrior.from_config(config, torch.device("cpu"))
    identity = torch.as_tensor(subject.identity, dtype=torch.float32)
    base = build_conditioning(prior, identity, configure(config, expression="neutral", accessory="").conditioning)
    variants = {"neutral": base, f"neutral + '{accessory}'": base.retarget(accessory=accessory),
                "surprise": base.retarget(expression="surprise")}
    for view in ("front", "side", "back"):
        similarity = cosine_similarity_matrix([c.final(view) for c in variants.values()])
        print(f"{view:5s} view: cos(c_final neutral, + accessory) = {similarity[0, 1]:.4f}; "
              f"cos(c_final neutral, surprise) = {similarity[0, 2]:.4f}")
    accessory_dir = runs["neutral_" + "_".join(accessory.split())][0]
    if "neutral" in runs:
        plain = iio.imread(runs["neutral"][0] / "frontal.png").astype(float)
        with_accessory = iio.imread(accessory_dir / "frontal.png").astype(float)
        difference = np.abs(plain - with_accessory)
        print(f"frontal renders, neutral vs neutral + accessory: mean |difference| {difference.mean():.2f} "
              f"(max {difference.max():.0f}) grey levels of 255")
        fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.3))
        for ax, image, title in zip(axes, [plain, with_accessory, np.clip(128 + 10 * (with_accessory - plain), 0, 255)],
                                    ["neutral", f"+ '{accessory}'", "difference × 10"]):
            ax.imshow(image.astype(np.uint8))
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        fig.savefig(out_dir / "accessory.png", dpi=80, bbox_inches="tight")
        plain_c = runs["neutral"][1]["expression_coefficients"]
        accessory_c = runs["neutral_" + "_".join(accessory.split())][1]["expression_coefficients"]
        print("final coefficients, neutral vs neutral + accessory: " + ", ".join(
            f"{k} {plain_c[k]:.2f}/{accessory_c[k]:.2f}" for k in plain_c if abs(plain_c[k] - accessory_c[k]) > 0.02))

# %% [markdown]
# The accessory moves $c_{final}$ further than the change of expression does (its text is blended in
# with its own weight, eq 5, on top of the expression stage). In the avatar nothing resembling glasses
# appears: the two runs differ where their optimisation paths parted (the random prior's ISM gradient
# differs, the emotion loss then reacts to slightly different colours and settles on other
# coefficients), which shows mostly at the mouth.

# %% [markdown]
# :::{admonition} With a GPU and the real weights: `params/paper.yaml`
# :class: tip
# The paper preset (CUDA, `pip install -e '.[gpu]'`, `sie3d weights download --all`) changes what
# drives the avatar:
#
# * **real Arc2Face guidance** (fp16 SD-1.5 UNet conditioned on the ArcFace identity, ISM with up to 20
#   inversion hops) steers the appearance of every view, the back and sides included, and the
#   expression and accessory embeddings steer it too: glasses can appear;
# * **the emotion loss reaches every parameter** (`loss.emotion_moves=all`, the paper's formulation,
#   $\lambda_{emotion} = 0.1$); no reference-view loss ($\lambda_{ref} = 0$); $\lambda_{pos} =
#   \lambda_{lap} = 10^8$;
# * **512² renders, batch 4, 5000 iterations**, gsplat's CUDA rasterizer, densification from iteration
#   100; SCRFD + ArcFace for the identity, DeepFace's classifier in the loss and `fer` as the judge.
#
# The paper reports about 70 minutes per avatar on an RTX 4090 (≈ 0.8 s per iteration);
# `sie3d bench generate --paper` times one iteration by part on your GPU. Set `loss.emotion_moves=expression`
# to keep the offline route's restriction with real weights.
# :::

# %% [markdown]
# ## Looking around the avatar
#
# With `interactive = True` (e.g. in JupyterLab) the cell below shows sliders for azimuth and elevation
# and renders the chosen avatar from `avatar.ply`. The book is built headless and skips it.

# %%
if interactive:
    import ipywidgets as widgets

    from sie3d.render.media import render_views
    from sie3d.avatar.ply import load_ply

    avatars = {name: load_ply(run_dir / "avatar.ply") for name, (run_dir, _) in runs.items()}

    def show(avatar, azimuth, elevation):
        image = render_views(avatars[avatar], [azimuth], 256, config.cameras, polar_deg=90.0 - elevation,
                             backend=config.render.backend)[0]
        plt.figure(figsize=(4, 4))
        plt.imshow(image)
        plt.axis("off")
        plt.show()

    widgets.interact(show, avatar=list(avatars),
                     azimuth=widgets.FloatSlider(value=0, min=-180, max=180, step=5, description="azimuth",
                                                 continuous_update=False),
                     elevation=widgets.FloatSlider(value=0, min=-60, max=60, step=5, description="elevation",
                                                   continuous_update=False))
else:
    print("interactive = False: the viewer is skipped (set interactive = True in JupyterLab)")

# %% [markdown]
# ## Summary

# %%
print(f"this page took {time.perf_counter() - notebook_start:.0f} s: "
      + (f"{generation_seconds:.0f} s generating {len(pending)} of the {len(runs)} runs" if pending else "")
      + (f"{', ' if pending else ''}{len(runs) - len(pending)} runs reused" if len(pending) < len(runs) else ""))

# %% [markdown]
# * Offline, one portrait becomes a 3D Gaussian head whose frontal render dlib matches to the photo
#   (the table above gives the distances), in about a minute or two per avatar on a CPU.
# * The target expression is a move of the template's blendshape coefficients by the emotion loss;
#   the landmark check, which the loss never saw, says whether the mouth and brows moved the right way.
# * The accessory text changes only the conditioning; offline that cannot draw glasses.
# * On a GPU the paper preset replaces the photo painting with Arc2Face guidance, lets the emotion loss
#   reach every parameter, and runs 5000 iterations at 512²; `sie3d bench generate --paper` times it.
