// sie3d viewer, part 3 of 3: the page. Classic script. Query parameters:
//   src        the avatar's script relative to this page: avatars/<name>.rig.js (a live rig) or
//              avatars/<name>.spz.js (static splats); each sets window.SIE3D_RIGS / SIE3D_SPLATS[name]
//   name       that key (default: the file name before its first dot)
//   radius, fov  the camera's distance (world units) and vertical field of view (degrees); a rig's own
//              header camera wins
//   turntable  image shown instead when WebGL 2 is missing
// Sliders (rig only): the coefficients posed are
//   c = b + intensity * sum_e s_e * prototype_e
// with b the blendshape sliders (they start at the avatar's own, trained coefficients, so the page opens
// on the avatar as it was made and an emotion is added to it, as `sie3d animate` starts from it; "neutral"
// sets b to 0), s_e the emotion sliders (0..1) and prototype_e the rig header's emotion table.
// Hooks for tests: <body data-frames> counts drawn frames; data-frame-ms is the mean time of re-pose +
// sort + draw (finished) over the slider changes so far (not the first frame), data-pose-ms the last
// re-pose + upload alone; data-error says why the page failed; the title ends in "ready" once drawn; window.sie3dSet({surprise: 1, intensity: 1, azimuth: 30}) moves
// sliders (and the camera, degrees) and redraws at once, returning that frame's milliseconds;
// window.sie3dSplats(step) returns the posed means and covariances of every step-th splat.
(function (S) {
  "use strict";
  const params = new URLSearchParams(window.location.search);
  const body = document.body;
  const state = { azimuth: 0, elevation: 0, radius: Number(params.get("radius") || 4.5),
                  fovy: (Number(params.get("fov") || 40.1) * Math.PI) / 180, frames: 0, changes: 0, changeMs: 0 };

  function fallback(reason) {
    body.classList.add("nowebgl");
    if (params.get("turntable")) document.getElementById("turntable").src = params.get("turntable");
    body.dataset.error = reason;
    document.title = "sie3d viewer: " + reason;
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error("cannot load " + src));
      document.head.appendChild(script);
    });
  }

  let renderer, avatar, sliders = {}, pending = 0;

  function coefficients() {
    const h = avatar.header, intensity = Number(sliders.intensity.value);
    const c = h.blendshapes.map((name) => Number(sliders[name].value));
    for (const [emotion, shape] of Object.entries(h.emotions)) {
      const s = sliders[emotion] ? Number(sliders[emotion].value) : 0;
      if (!s) continue;
      for (const [name, w] of Object.entries(shape)) c[h.blendshapes.indexOf(name)] += intensity * s * w;
    }
    return c;
  }

  function draw() {
    const canvas = renderer.canvas;
    const camera = S.orbitCamera(state.azimuth, state.elevation, state.radius, state.fovy, canvas.width / canvas.height);
    renderer.draw(camera);
    state.frames += 1;
    body.dataset.frames = String(state.frames);
  }

  // re-pose at the sliders' coefficients and draw, waiting for the frame to finish; returns milliseconds
  // (counted in data-frame-ms unless it is the first frame)
  function repose(first) {
    const t0 = performance.now();
    S.poseRig(avatar, coefficients(), renderer.means, renderer.covs);
    renderer.uploadGeometry();
    const t1 = performance.now();
    draw();
    renderer.gl.readPixels(0, 0, 1, 1, renderer.gl.RGBA, renderer.gl.UNSIGNED_BYTE, new Uint8Array(4));
    const ms = performance.now() - t0;
    body.dataset.poseMs = (t1 - t0).toFixed(1);
    if (!first) {
      state.changes += 1;
      state.changeMs += ms;
      body.dataset.frameMs = (state.changeMs / state.changes).toFixed(1);
    }
    return ms;
  }

  // coalesce UI events into one frame: 1 = view changed, 2 = pose changed
  function request(what) {
    if (!pending) requestAnimationFrame(() => { const p = pending; pending = 0; if (p & 2) repose(); else draw(); });
    pending |= what;
  }

  function slider(parent, name, min, max, value) {
    const label = document.createElement("label");
    label.textContent = name.replace(/_/g, " ");
    // step "any": a slider holds the exact value it is given (the avatar's own coefficients, sie3dSet's)
    const input = Object.assign(document.createElement("input"), { type: "range", min, max, step: "any", value });
    const output = document.createElement("output");
    output.textContent = Number(value).toFixed(2);
    input.addEventListener("input", () => { output.textContent = Number(input.value).toFixed(2); request(2); });
    label.append(input, output);
    parent.appendChild(label);
    return input;
  }

  function setSlider(name, value) {
    const input = sliders[name];
    input.value = String(value);
    input.nextSibling.textContent = Number(input.value).toFixed(2);
  }

  function buildPanel() {
    const h = avatar.header;
    sliders.intensity = document.getElementById("intensity");
    sliders.intensity.addEventListener("input", () => { setSlider("intensity", sliders.intensity.value); request(2); });
    for (const emotion of Object.keys(h.emotions)) {
      if (Object.keys(h.emotions[emotion]).length) sliders[emotion] = slider(document.getElementById("emotions"), emotion, 0, 1, 0);
    }
    h.blendshapes.forEach((name, k) => {
      sliders[name] = slider(document.getElementById("blendshapes"), name, -0.5, 1.5, h.coefficients[k]);
    });
    const reset = (base) => () => {
      for (const e of Object.keys(h.emotions)) if (sliders[e]) setSlider(e, 0);
      h.blendshapes.forEach((name, k) => setSlider(name, base ? h.coefficients[k] : 0));
      setSlider("intensity", 1);
      request(2);
    };
    document.getElementById("own").addEventListener("click", reset(true));
    document.getElementById("neutral").addEventListener("click", reset(false));
  }

  window.sie3dSet = function (values) {
    for (const [key, value] of Object.entries(values)) {
      if (key === "azimuth" || key === "elevation") state[key] = (Number(value) * Math.PI) / 180;
      else if (sliders[key]) setSlider(key, value);
      else throw new Error("sie3dSet: unknown slider " + key + "; sliders: " + Object.keys(sliders).join(", "));
    }
    if (avatar.kind === "rig") return repose();
    const t0 = performance.now();
    draw();
    return performance.now() - t0;
  };

  // the current pose of every step-th splat: {means: [x, y, z, ...], covs: [xx, xy, xz, yy, yz, zz, ...]}
  window.sie3dSplats = function (step) {
    const means = [], covs = [];
    for (let i = 0; i < avatar.n; i += step) {
      for (let d = 0; d < 3; d++) means.push(renderer.means[4 * i + d]);
      for (let d = 0; d < 6; d++) covs.push(renderer.covs[8 * i + d]);
    }
    return { means, covs };
  };

  function controls(canvas) {
    let drag = null;
    canvas.addEventListener("pointerdown", (e) => { drag = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId); });
    canvas.addEventListener("pointerup", () => { drag = null; });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      state.azimuth -= (e.clientX - drag[0]) * 0.01;
      state.elevation = Math.max(-1.5, Math.min(1.5, state.elevation + (e.clientY - drag[1]) * 0.01));
      drag = [e.clientX, e.clientY];
      request(1);
    });
    const base = state.radius;
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      state.radius = Math.max(0.2 * base, Math.min(4 * base, state.radius * Math.exp(e.deltaY * 0.001)));
      request(1);
    }, { passive: false });
    canvas.addEventListener("dblclick", () => { state.azimuth = 0; state.elevation = 0; state.radius = base; request(1); });
  }

  function resize() {
    const canvas = renderer.canvas, scale = Math.min(window.devicePixelRatio || 1, 2);
    canvas.width = Math.max(1, Math.round(canvas.clientWidth * scale));
    canvas.height = Math.max(1, Math.round(canvas.clientHeight * scale));
    request(1);
  }

  async function main() {
    const src = params.get("src");
    if (!src) return fallback("no src parameter");
    const canvas = document.getElementById("canvas");
    try { renderer = new S.SplatRenderer(canvas); } catch (e) { return fallback(String(e.message || e)); }
    const name = params.get("name") || src.split("/").pop().split(".")[0];
    await loadScript(src);
    const b64 = (window.SIE3D_RIGS || {})[name] || (window.SIE3D_SPLATS || {})[name];
    if (!b64) throw new Error(src + " defines no avatar named " + name);
    const bytes = await S.gunzipBase64(b64);
    const isRig = String.fromCharCode.apply(null, bytes.subarray(0, 8)) === "SIE3DRIG";
    avatar = isRig ? S.parseRig(bytes) : S.parseSpz(bytes);
    const arrays = renderer.allocate(avatar.n);
    arrays.colors.set(avatar.colors);
    renderer.uploadColors();
    if (isRig) {
      state.radius = avatar.header.camera.radius;
      state.fovy = (avatar.header.camera.fovy_deg * Math.PI) / 180;
      buildPanel();
    } else {
      body.classList.add("static");
      arrays.means.set(avatar.means);
      arrays.covs.set(avatar.covs);
      renderer.uploadGeometry();
    }
    controls(canvas);
    window.addEventListener("resize", resize);
    resize();
    if (isRig) repose(true); else draw();
    document.title = "sie3d viewer: ready";
  }

  main().catch((err) => { console.error(err); fallback("error: " + (err.message || err)); });
})((window.SIE3D = window.SIE3D || {}));
