// sie3d viewer, part 2 of 3: a WebGL 2 Gaussian-splat renderer. Classic script.
// Each Gaussian is one instance of a screen-space quad. The vertex shader projects its world covariance
// to the image (EWA splatting: Sigma' = J W Sigma W^T J^T, J the perspective projection's Jacobian at
// the mean, plus 0.3 px^2 so a splat covers at least a pixel), takes the 2D covariance's eigenvectors as
// the quad's axes and spans 3 standard deviations along each; the fragment shader weighs the splat's
// opacity by exp(-r^2 / 2). Splats are drawn back to front (a 16-bit counting sort of view depth, redone
// whenever the view or the pose changes) with premultiplied-alpha "over" blending onto white.
// Data lives in textures, one texel row of 2048 splats: means (RGBA32F), covariances (RGBA32F, two
// texels a splat), colours with opacity (RGBA8); the instanced attribute is the sorted splat index.
(function (S) {
  "use strict";
  const WIDTH = 2048;

  const VERTEX = `#version 300 es
precision highp float; precision highp int;
uniform highp sampler2D uMean; uniform highp sampler2D uCov; uniform mediump sampler2D uColor;
uniform mat4 uView; uniform mat4 uProj; uniform float uFocal; uniform vec2 uViewport;
in vec2 aCorner; in uint aIndex;
out vec4 vColor; out vec2 vPos;
ivec2 texel(uint i) { return ivec2(int(i % ${WIDTH}u), int(i / ${WIDTH}u)); }
void main() {
  vec4 t = uView * vec4(texelFetch(uMean, texel(aIndex), 0).xyz, 1.0);
  vec4 clip = uProj * t;
  float z = -t.z;
  if (z < 0.01 || abs(clip.x) > 1.3 * clip.w || abs(clip.y) > 1.3 * clip.w) { gl_Position = vec4(0.0, 0.0, 2.0, 1.0); return; }
  vec4 a = texelFetch(uCov, texel(2u * aIndex), 0), b = texelFetch(uCov, texel(2u * aIndex + 1u), 0);
  mat3 sigma = mat3(a.x, a.y, a.z, a.y, a.w, b.x, a.z, b.x, b.y);
  // image coordinates u = f x / z, v = f y / z (pixels, y up) with z = -t.z: the Jacobian's columns
  mat3 J = mat3(uFocal / z, 0.0, 0.0, 0.0, uFocal / z, 0.0, uFocal * t.x / (z * z), uFocal * t.y / (z * z), 0.0);
  mat3 T = J * mat3(uView);
  mat3 c = T * sigma * transpose(T);
  float cxx = c[0][0] + 0.3, cxy = c[0][1], cyy = c[1][1] + 0.3;
  float mid = 0.5 * (cxx + cyy), r = length(vec2(0.5 * (cxx - cyy), cxy));
  float l1 = mid + r, l2 = max(mid - r, 0.05);
  vec2 v1 = abs(cxy) > 1e-9 ? normalize(vec2(cxy, l1 - cxx)) : (cxx >= cyy ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
  vec2 v2 = vec2(-v1.y, v1.x);
  vec2 offset = aCorner.x * 3.0 * min(sqrt(l1), 1024.0) * v1 + aCorner.y * 3.0 * min(sqrt(l2), 1024.0) * v2;
  gl_Position = clip + vec4(offset * 2.0 / uViewport * clip.w, 0.0, 0.0);
  vColor = texelFetch(uColor, texel(aIndex), 0);
  vPos = 3.0 * aCorner;
}`;

  const FRAGMENT = `#version 300 es
precision highp float;
in vec4 vColor; in vec2 vPos;
out vec4 outColor;
void main() {
  float r2 = dot(vPos, vPos);
  if (r2 > 9.0) discard;
  float alpha = vColor.a * exp(-0.5 * r2);
  if (alpha < 1.0 / 255.0) discard;
  outColor = vec4(vColor.rgb * alpha, alpha);
}`;

  function compile(gl, type, source) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error("shader: " + gl.getShaderInfoLog(shader));
    return shader;
  }

  function texture(gl, unit) {
    const tex = gl.createTexture();
    gl.activeTexture(gl.TEXTURE0 + unit);
    gl.bindTexture(gl.TEXTURE_2D, tex);
    for (const p of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) gl.texParameteri(gl.TEXTURE_2D, p, gl.NEAREST);
    return tex;
  }

  class SplatRenderer {
    constructor(canvas) {
      const gl = canvas.getContext("webgl2", { alpha: false, antialias: false, depth: false,
                                               preserveDrawingBuffer: true });
      if (!gl) throw new Error("no WebGL 2");
      this.gl = gl;
      this.canvas = canvas;
      const program = gl.createProgram();
      gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
      gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
      gl.linkProgram(program);
      if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error("program: " + gl.getProgramInfoLog(program));
      this.program = program;
      gl.useProgram(program);
      this.loc = {};
      for (const name of ["uMean", "uCov", "uColor", "uView", "uProj", "uFocal", "uViewport"]) {
        this.loc[name] = gl.getUniformLocation(program, name);
      }
      this.vao = gl.createVertexArray();
      gl.bindVertexArray(this.vao);
      const corners = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, corners);
      gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
      const aCorner = gl.getAttribLocation(program, "aCorner");
      gl.enableVertexAttribArray(aCorner);
      gl.vertexAttribPointer(aCorner, 2, gl.FLOAT, false, 0, 0);
      this.indexBuffer = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuffer);
      const aIndex = gl.getAttribLocation(program, "aIndex");
      gl.enableVertexAttribArray(aIndex);
      gl.vertexAttribIPointer(aIndex, 1, gl.UNSIGNED_INT, 0, 0);
      gl.vertexAttribDivisor(aIndex, 1);
      this.textures = { mean: texture(gl, 0), cov: texture(gl, 1), color: texture(gl, 2) };
      gl.uniform1i(this.loc.uMean, 0);
      gl.uniform1i(this.loc.uCov, 1);
      gl.uniform1i(this.loc.uColor, 2);
      this.n = 0;
    }

    // allocate for n splats; returns the arrays the caller fills (means [4n], covs [8n], colors [4n])
    allocate(n) {
      this.n = n;
      this.rows = Math.ceil(n / WIDTH);
      this.means = new Float32Array(4 * WIDTH * this.rows);
      this.covs = new Float32Array(8 * WIDTH * this.rows);
      this.colors = new Uint8Array(4 * WIDTH * this.rows);
      this.order = new Uint32Array(n);
      this.depth = new Float32Array(n);
      this.keys = new Uint16Array(n);
      this.counts = new Uint32Array(65536);
      const gl = this.gl;
      gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuffer);
      gl.bufferData(gl.ARRAY_BUFFER, this.order.byteLength, gl.DYNAMIC_DRAW);
      return { means: this.means, covs: this.covs, colors: this.colors };
    }

    uploadColors() {
      const gl = this.gl;
      gl.activeTexture(gl.TEXTURE2);
      gl.bindTexture(gl.TEXTURE_2D, this.textures.color);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, WIDTH, this.rows, 0, gl.RGBA, gl.UNSIGNED_BYTE, this.colors);
    }

    uploadGeometry() {
      const gl = this.gl;
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, this.textures.mean);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32F, WIDTH, this.rows, 0, gl.RGBA, gl.FLOAT, this.means);
      gl.activeTexture(gl.TEXTURE1);
      gl.bindTexture(gl.TEXTURE_2D, this.textures.cov);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32F, WIDTH, 2 * this.rows, 0, gl.RGBA, gl.FLOAT, this.covs);
    }

    // back to front along the view direction `forward` (unit, world) from `eye`: a 16-bit counting sort
    sort(eye, forward) {
      const n = this.n, m = this.means, depth = this.depth, keys = this.keys, counts = this.counts;
      let lo = Infinity, hi = -Infinity;
      for (let i = 0; i < n; i++) {
        const d = (m[4 * i] - eye[0]) * forward[0] + (m[4 * i + 1] - eye[1]) * forward[1] + (m[4 * i + 2] - eye[2]) * forward[2];
        depth[i] = d;
        if (d < lo) lo = d;
        if (d > hi) hi = d;
      }
      const scale = hi > lo ? 65535 / (hi - lo) : 0;
      counts.fill(0);
      for (let i = 0; i < n; i++) {
        const key = 65535 - Math.floor((depth[i] - lo) * scale);  // farthest first
        keys[i] = key;
        counts[key]++;
      }
      let total = 0;
      for (let k = 0; k < 65536; k++) { const c = counts[k]; counts[k] = total; total += c; }
      for (let i = 0; i < n; i++) this.order[counts[keys[i]]++] = i;
      const gl = this.gl;
      gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuffer);
      gl.bufferSubData(gl.ARRAY_BUFFER, 0, this.order);
    }

    // camera: {view: Float32Array(16), proj: Float32Array(16), eye, forward, fovy (radians)}
    draw(camera) {
      const gl = this.gl, canvas = this.canvas;
      this.sort(camera.eye, camera.forward);
      gl.viewport(0, 0, canvas.width, canvas.height);
      gl.clearColor(1, 1, 1, 1);
      gl.clear(gl.COLOR_BUFFER_BIT);
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
      gl.useProgram(this.program);
      gl.bindVertexArray(this.vao);
      gl.uniformMatrix4fv(this.loc.uView, false, camera.view);
      gl.uniformMatrix4fv(this.loc.uProj, false, camera.proj);
      gl.uniform1f(this.loc.uFocal, 0.5 * canvas.height / Math.tan(0.5 * camera.fovy));
      gl.uniform2f(this.loc.uViewport, canvas.width, canvas.height);
      gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, this.n);
    }
  }

  // a camera on a sphere about the origin: azimuth, elevation (radians), distance; y up
  S.orbitCamera = function (azimuth, elevation, distance, fovy, aspect) {
    const ce = Math.cos(elevation);
    const eye = [distance * ce * Math.sin(azimuth), distance * Math.sin(elevation), distance * ce * Math.cos(azimuth)];
    const z = eye.map((e) => e / distance);  // camera +z (backwards)
    const xl = Math.hypot(z[2], z[0]) || 1;
    const x = [z[2] / xl, 0, -z[0] / xl];  // up x z
    const y = [z[1] * x[2] - z[2] * x[1], z[2] * x[0] - z[0] * x[2], z[0] * x[1] - z[1] * x[0]];
    const dot = (a) => a[0] * eye[0] + a[1] * eye[1] + a[2] * eye[2];
    const view = new Float32Array([x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0,
                                   -dot(x), -dot(y), -dot(z), 1]);
    const near = distance / 100, far = distance * 10, f = 1 / Math.tan(fovy / 2);
    const proj = new Float32Array([f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) / (near - far), -1,
                                   0, 0, (2 * far * near) / (near - far), 0]);
    return { view, proj, eye, forward: z.map((v) => -v), fovy };
  };

  S.SplatRenderer = SplatRenderer;
})((window.SIE3D = window.SIE3D || {}));
