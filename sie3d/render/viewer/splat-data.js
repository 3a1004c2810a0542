// sie3d viewer, part 1 of 3: avatar data. Classic script (no modules, so the page works from file://).
// Reads the two formats the page is given, as base64 of the gzip bytes (set by avatars/<name>.rig.js or
// avatars/<name>.spz.js), and poses them into the renderer's layout:
//   means  Float32Array [4 N]  x, y, z, 0 per Gaussian (sie3d's y-up world)
//   covs   Float32Array [8 N]  world covariance xx, xy, xz, yy, yz, zz, 0, 0
//   colors Uint8Array   [4 N]  r, g, b, opacity (0..255)
// The rig (avatar.rig, version 1; the contract is documented in the README) re-poses at any blendshape
// coefficients c [K]:  v = vertices + sum_k c_k blendshapes[k];  per face: e1 = normalize(v1 - v0),
// n = normalize((v1 - v0) x (v2 - v0)), e2 = n x e1, R = [e1 e2 n], k = mean edge length, centroid;
// per Gaussian on face f: mean = centroid + k R offset, rotation = R * q_local, scale = k exp(log_scale),
// so its covariance is k^2 R (Rl S^2 Rl^T) R^T with the face-local part Rl S^2 Rl^T fixed (computed once).
(function (S) {
  "use strict";

  S.gunzipBase64 = async function (b64) {
    const text = atob(b64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  };

  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    if (exp === 0) return sign * frac * Math.pow(2, -24);
    if (exp === 31) return frac ? NaN : sign * Infinity;
    return sign * (1 + frac / 1024) * Math.pow(2, exp - 15);
  }

  const SIZES = { float32: 4, float16: 2, uint32: 4, uint16: 2, uint8: 1 };

  // one buffer of the rig as a typed array (float16 widened to Float32Array)
  function readBuffer(bytes, blobStart, name, spec) {
    const size = SIZES[spec.dtype];
    if (!size) throw new Error("rig buffer " + name + ": unknown dtype " + spec.dtype);
    const count = spec.shape.reduce((a, b) => a * b, 1);
    if (count * size !== spec.length) throw new Error("rig buffer " + name + ": length does not match its shape");
    const start = blobStart + spec.offset;
    if (start + spec.length > bytes.length) throw new Error("rig buffer " + name + " runs past the file");
    const raw = bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + spec.length);
    if (spec.dtype === "float32") return new Float32Array(raw);
    if (spec.dtype === "uint32") return new Uint32Array(raw);
    if (spec.dtype === "uint8") return new Uint8Array(raw);
    const u16 = new Uint16Array(raw);
    if (spec.dtype === "uint16") return u16;
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = halfToFloat(u16[i]);
    return out;
  }

  // 6 covariance entries (xx, xy, xz, yy, yz, zz) of rotation q (w, x, y, z) and scales (sx, sy, sz)
  function covariance(w, x, y, z, sx, sy, sz, out, o) {
    const norm = Math.hypot(w, x, y, z) || 1;
    w /= norm; x /= norm; y /= norm; z /= norm;
    const r00 = 1 - 2 * (y * y + z * z), r01 = 2 * (x * y - w * z), r02 = 2 * (x * z + w * y);
    const r10 = 2 * (x * y + w * z), r11 = 1 - 2 * (x * x + z * z), r12 = 2 * (y * z - w * x);
    const r20 = 2 * (x * z - w * y), r21 = 2 * (y * z + w * x), r22 = 1 - 2 * (x * x + y * y);
    const a = sx * sx, b = sy * sy, c = sz * sz;
    out[o] = r00 * r00 * a + r01 * r01 * b + r02 * r02 * c;
    out[o + 1] = r00 * r10 * a + r01 * r11 * b + r02 * r12 * c;
    out[o + 2] = r00 * r20 * a + r01 * r21 * b + r02 * r22 * c;
    out[o + 3] = r10 * r10 * a + r11 * r11 * b + r12 * r12 * c;
    out[o + 4] = r10 * r20 * a + r11 * r21 * b + r12 * r22 * c;
    out[o + 5] = r20 * r20 * a + r21 * r21 * b + r22 * r22 * c;
  }

  S.parseRig = function (bytes) {
    const magic = String.fromCharCode.apply(null, bytes.subarray(0, 8));
    if (magic !== "SIE3DRIG") throw new Error("not an avatar.rig (magic " + JSON.stringify(magic) + ")");
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const version = view.getUint32(8, true), length = view.getUint32(12, true);
    if (version !== 1) throw new Error("avatar.rig version " + version + ": this page reads version 1");
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + length)));
    const blobStart = 16 + Math.ceil(length / 4) * 4;
    const buf = {};
    for (const name of Object.keys(header.buffers)) buf[name] = readBuffer(bytes, blobStart, name, header.buffers[name]);
    const n = header.num_gaussians, localCov = new Float32Array(6 * n);
    for (let i = 0; i < n; i++) {
      const q = buf.rotations, s = buf.log_scales;
      covariance(q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3],
                 Math.exp(s[3 * i]), Math.exp(s[3 * i + 1]), Math.exp(s[3 * i + 2]), localCov, 6 * i);
    }
    const colors = new Uint8Array(4 * n);
    for (let i = 0; i < n; i++) {
      colors.set(buf.colors.subarray(3 * i, 3 * i + 3), 4 * i);
      colors[4 * i + 3] = buf.opacities[i];
    }
    return { kind: "rig", header, n, buf, localCov, colors, faceData: new Float32Array(13 * header.num_faces),
             posed: new Float32Array(buf.vertices.length) };
  };

  // pose the rig at coefficients c [K] into means [4N] and covs [8N]
  S.poseRig = function (rig, c, means, covs) {
    const { vertices, blendshapes, faces, face_ids: faceIds, offsets } = rig.buf;
    const v = rig.posed, size = vertices.length;
    v.set(vertices);
    for (let k = 0; k < c.length; k++) {
      const w = c[k];
      if (w === 0) continue;
      const base = k * size;
      for (let j = 0; j < size; j++) v[j] += w * blendshapes[base + j];
    }
    const fd = rig.faceData, nf = rig.header.num_faces;
    for (let f = 0; f < nf; f++) {  // centroid (3), e1 (3), e2 (3), n (3), k
      const a = 3 * faces[3 * f], b = 3 * faces[3 * f + 1], d = 3 * faces[3 * f + 2];
      const ux = v[b] - v[a], uy = v[b + 1] - v[a + 1], uz = v[b + 2] - v[a + 2];
      const wx = v[d] - v[a], wy = v[d + 1] - v[a + 1], wz = v[d + 2] - v[a + 2];
      const lu = Math.hypot(ux, uy, uz) || 1e-12;
      let nx = uy * wz - uz * wy, ny = uz * wx - ux * wz, nz = ux * wy - uy * wx;
      const ln = Math.hypot(nx, ny, nz) || 1e-12;
      nx /= ln; ny /= ln; nz /= ln;
      const e1x = ux / lu, e1y = uy / lu, e1z = uz / lu;
      const o = 13 * f;
      fd[o] = (v[a] + v[b] + v[d]) / 3; fd[o + 1] = (v[a + 1] + v[b + 1] + v[d + 1]) / 3;
      fd[o + 2] = (v[a + 2] + v[b + 2] + v[d + 2]) / 3;
      fd[o + 3] = e1x; fd[o + 4] = e1y; fd[o + 5] = e1z;
      fd[o + 6] = ny * e1z - nz * e1y; fd[o + 7] = nz * e1x - nx * e1z; fd[o + 8] = nx * e1y - ny * e1x;
      fd[o + 9] = nx; fd[o + 10] = ny; fd[o + 11] = nz;
      fd[o + 12] = (lu + Math.hypot(v[d] - v[b], v[d + 1] - v[b + 1], v[d + 2] - v[b + 2]) + Math.hypot(wx, wy, wz)) / 3;
    }
    const L = rig.localCov;
    for (let i = 0; i < rig.n; i++) {
      const o = 13 * faceIds[i], k = fd[o + 12];
      // R columns: e1 = (a0, a1, a2), e2 = (b0, b1, b2), n = (c0, c1, c2)
      const a0 = fd[o + 3], a1 = fd[o + 4], a2 = fd[o + 5], b0 = fd[o + 6], b1 = fd[o + 7], b2 = fd[o + 8];
      const c0 = fd[o + 9], c1 = fd[o + 10], c2 = fd[o + 11];
      const ox = offsets[3 * i], oy = offsets[3 * i + 1], oz = offsets[3 * i + 2];
      means[4 * i] = fd[o] + k * (a0 * ox + b0 * oy + c0 * oz);
      means[4 * i + 1] = fd[o + 1] + k * (a1 * ox + b1 * oy + c1 * oz);
      means[4 * i + 2] = fd[o + 2] + k * (a2 * ox + b2 * oy + c2 * oz);
      // M = R L (L symmetric: l00 l01 l02 / l01 l11 l12 / l02 l12 l22), then k^2 M R^T
      const l = 6 * i, l00 = L[l], l01 = L[l + 1], l02 = L[l + 2], l11 = L[l + 3], l12 = L[l + 4], l22 = L[l + 5];
      const m00 = a0 * l00 + b0 * l01 + c0 * l02, m01 = a0 * l01 + b0 * l11 + c0 * l12, m02 = a0 * l02 + b0 * l12 + c0 * l22;
      const m10 = a1 * l00 + b1 * l01 + c1 * l02, m11 = a1 * l01 + b1 * l11 + c1 * l12, m12 = a1 * l02 + b1 * l12 + c1 * l22;
      const m20 = a2 * l00 + b2 * l01 + c2 * l02, m21 = a2 * l01 + b2 * l11 + c2 * l12, m22 = a2 * l02 + b2 * l12 + c2 * l22;
      const kk = k * k, q = 8 * i;
      covs[q] = kk * (m00 * a0 + m01 * b0 + m02 * c0);
      covs[q + 1] = kk * (m00 * a1 + m01 * b1 + m02 * c1);
      covs[q + 2] = kk * (m00 * a2 + m01 * b2 + m02 * c2);
      covs[q + 3] = kk * (m10 * a1 + m11 * b1 + m12 * c1);
      covs[q + 4] = kk * (m10 * a2 + m11 * b2 + m12 * c2);
      covs[q + 5] = kk * (m20 * a2 + m21 * b2 + m22 * c2);
    }
  };

  // .spz (Niantic's layout, versions 2 and 3, SH degree 0 read; see sie3d/avatar/spz.py): static splats
  S.parseSpz = function (bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (view.getUint32(0, true) !== 0x5053474e) throw new Error("not an .spz stream");
    const version = view.getUint32(4, true), n = view.getUint32(8, true), fractional = bytes[13];
    if (version !== 2 && version !== 3) throw new Error(".spz version " + version + ": 2 and 3 are read");
    const shDegree = bytes[12], pos = 16, alpha = pos + 9 * n, color = alpha + n, scale = color + 3 * n;
    const rot = scale + 3 * n, shStart = rot + (version === 3 ? 4 : 3) * n;
    const shCoeffs = [0, 9, 24, 45][shDegree] || 0;
    if (shStart + shCoeffs * n > bytes.length) throw new Error(".spz stream truncated");
    const means = new Float32Array(4 * n), covs = new Float32Array(8 * n), colors = new Uint8Array(4 * n);
    const cov = new Float32Array(6), unit = 1 / (1 << fractional), q = [0, 0, 0, 0];
    for (let i = 0; i < n; i++) {
      for (let d = 0; d < 3; d++) {
        const b = pos + 9 * i + 3 * d;
        let fixed = bytes[b] | (bytes[b + 1] << 8) | (bytes[b + 2] << 16);
        if (fixed & 0x800000) fixed -= 1 << 24;
        means[4 * i + d] = fixed * unit;
        const fdc = (bytes[color + 3 * i + d] - 127.5) / (0.15 * 255);
        colors[4 * i + d] = Math.max(0, Math.min(255, Math.round(255 * (0.5 + 0.28209479177387814 * fdc))));
      }
      colors[4 * i + 3] = bytes[alpha + i];
      if (version === 3) {  // smallest three: top 2 bits name the largest of x, y, z, w; 10 bits each for the rest
        const code = view.getUint32(rot + 4 * i, true), largest = code >>> 30;
        let rest = code, sum = 0;
        for (let c = 3; c >= 0; c--) {
          if (c === largest) continue;
          const mag = ((rest & 511) / 511) * Math.SQRT1_2;
          q[c] = (rest >>> 9) & 1 ? -mag : mag;
          sum += mag * mag;
          rest >>>= 10;
        }
        q[largest] = Math.sqrt(Math.max(0, 1 - sum));
      } else {
        let sum = 0;
        for (let c = 0; c < 3; c++) { q[c] = bytes[rot + 3 * i + c] / 127.5 - 1; sum += q[c] * q[c]; }
        q[3] = Math.sqrt(Math.max(0, 1 - sum));
      }
      const sc = (c) => Math.exp(bytes[scale + 3 * i + c] / 16 - 10);
      covariance(q[3], q[0], q[1], q[2], sc(0), sc(1), sc(2), cov, 0);
      covs.set(cov, 8 * i);
    }
    return { kind: "spz", n, means, covs, colors };
  };
})((window.SIE3D = window.SIE3D || {}));
