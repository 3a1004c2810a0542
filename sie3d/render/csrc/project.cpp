// EWA projection of 3D Gaussians into pinhole cameras, forward and backward, on the CPU.
//
// Mirrors sie3d.render.rasterize.project_gaussians line by line (gsplat's conventions): OpenCV
// world-to-camera viewmats [C, 4, 4], intrinsics Ks [C, 3, 3], Jacobian x/z, y/z clamped to 1.3x
// the frustum, eps2d on the 2D covariance diagonal, entries outside [near, far] get z = 1 so that
// everything stays finite. Parallel over Gaussians; the cameras of one Gaussian run in one thread,
// so the backward pass accumulates its gradients without races.

#include "raster.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <cmath>

namespace sie3d {
namespace {

template <typename T>
struct Rot {
  T q[4];     // normalised quaternion (w, x, y, z)
  T norm;     // max(|q|, 1e-12), as torch.nn.functional.normalize
  T R[3][3];  // rotation matrix of q
};

template <typename T>
Rot<T> rotation(const T* quat) {
  Rot<T> r;
  T n2 = quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3];
  r.norm = std::max(std::sqrt(n2), T(1e-12));
  for (int i = 0; i < 4; ++i) r.q[i] = quat[i] / r.norm;
  const T w = r.q[0], x = r.q[1], y = r.q[2], z = r.q[3];
  const T R[3][3] = {{1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)},
                     {2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)},
                     {2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)}};
  std::copy(&R[0][0], &R[0][0] + 9, &r.R[0][0]);
  return r;
}

// out = A B (3x3), or A B^T with transpose_b
template <typename T>
void matmul3(const T A[3][3], const T B[3][3], T out[3][3], bool transpose_b = false) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      T s = 0;
      for (int k = 0; k < 3; ++k) s += A[i][k] * (transpose_b ? B[j][k] : B[k][j]);
      out[i][j] = s;
    }
}

// Everything the forward pass derives for one (camera, Gaussian), kept for the backward pass.
template <typename T>
struct Projected {
  T W[3][3];      // camera rotation
  T M[3][3];      // Rq diag(s)
  T cov_c[3][3];  // camera-space covariance
  T x, y, z;      // camera-space mean, z replaced by 1 outside [near, far]
  bool in_depth;
  T fx, fy, tx, ty, u, v, lo_x, hi_x, lo_y, hi_y;
  T a, b, c, det;  // 2D covariance (with eps2d) and its determinant
  bool ok_det;
};

template <typename T>
Projected<T> project_one(const T* mean, const Rot<T>& rot, const T* scale, const T* view, const T* K, int width,
                         int height, T near_plane, T far_plane, T eps2d) {
  Projected<T> p;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      p.W[i][j] = view[i * 4 + j];
      p.M[i][j] = rot.R[i][j] * scale[j];
    }
  T cov[3][3], tmp[3][3];
  matmul3(p.M, p.M, cov, true);     // Rq S S^T Rq^T
  matmul3(p.W, cov, tmp);           // W Sigma
  matmul3(tmp, p.W, p.cov_c, true); // W Sigma W^T
  T mc[3];
  for (int i = 0; i < 3; ++i) mc[i] = p.W[i][0] * mean[0] + p.W[i][1] * mean[1] + p.W[i][2] * mean[2] + view[i * 4 + 3];
  p.x = mc[0];
  p.y = mc[1];
  p.in_depth = mc[2] >= near_plane && mc[2] <= far_plane;
  p.z = p.in_depth ? mc[2] : T(1);

  p.fx = K[0];
  p.fy = K[4];
  const T cx = K[2], cy = K[5];
  const T tan_fovx = T(0.5) * width / p.fx, tan_fovy = T(0.5) * height / p.fy;
  p.lo_x = -(cx / p.fx + T(0.3) * tan_fovx);
  p.hi_x = (width - cx) / p.fx + T(0.3) * tan_fovx;
  p.lo_y = -(cy / p.fy + T(0.3) * tan_fovy);
  p.hi_y = (height - cy) / p.fy + T(0.3) * tan_fovy;
  p.tx = p.x / p.z;
  p.ty = p.y / p.z;
  p.u = std::min(std::max(p.tx, p.lo_x), p.hi_x);
  p.v = std::min(std::max(p.ty, p.lo_y), p.hi_y);
  // J = [[fx/z, 0, -fx u/z], [0, fy/z, -fy v/z]]; rows j0, j1
  const T j0[3] = {p.fx / p.z, 0, -p.fx * p.u / p.z};
  const T j1[3] = {0, p.fy / p.z, -p.fy * p.v / p.z};
  T s00 = 0, s01 = 0, s11 = 0;
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 3; ++k) {
      s00 += j0[i] * p.cov_c[i][k] * j0[k];
      s01 += j0[i] * p.cov_c[i][k] * j1[k];
      s11 += j1[i] * p.cov_c[i][k] * j1[k];
    }
  p.a = s00 + eps2d;
  p.b = s01;
  p.c = s11 + eps2d;
  const T det = p.a * p.c - p.b * p.b;
  p.ok_det = det > 0;
  p.det = p.ok_det ? det : T(1);
  return p;
}

template <typename T>
void project_forward_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                          const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks, int width,
                          int height, double near_plane, double far_plane, double eps2d, double alpha_threshold,
                          double max_extend, at::Tensor& means2d, at::Tensor& conics, at::Tensor& depths,
                          at::Tensor& radii, at::Tensor& extents, at::Tensor& valid) {
  const int64_t N = means.size(0), C = viewmats.size(0);
  const T* m = means.data_ptr<T>();
  const T* q = quats.data_ptr<T>();
  const T* s = scales.data_ptr<T>();
  const T* o = opacities.data_ptr<T>();
  const T* vm = viewmats.data_ptr<T>();
  const T* ks = Ks.data_ptr<T>();
  T* out_m2 = means2d.data_ptr<T>();
  T* out_con = conics.data_ptr<T>();
  T* out_z = depths.data_ptr<T>();
  int32_t* out_r = radii.data_ptr<int32_t>();
  T* out_ext = extents.data_ptr<T>();
  bool* out_valid = valid.data_ptr<bool>();
  const T thr = T(alpha_threshold);
  at::parallel_for(0, N, 256, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const Rot<T> rot = rotation(q + 4 * n);
      for (int64_t c = 0; c < C; ++c) {
        const Projected<T> p = project_one(m + 3 * n, rot, s + 3 * n, vm + 16 * c, ks + 9 * c, width, height,
                                           T(near_plane), T(far_plane), T(eps2d));
        const int64_t i = c * N + n;
        out_con[3 * i] = p.c / p.det;
        out_con[3 * i + 1] = -p.b / p.det;
        out_con[3 * i + 2] = p.a / p.det;
        const T mx = p.fx * p.x / p.z + ks[9 * c + 2], my = p.fy * p.y / p.z + ks[9 * c + 5];
        out_m2[2 * i] = mx;
        out_m2[2 * i + 1] = my;
        out_z[i] = p.z;
        const T op = o[n];
        const T extend = std::min(std::sqrt(T(2) * std::log(std::max(op, thr) / thr)), T(max_extend));
        const T ex = extend * std::sqrt(std::max(p.a, T(0))), ey = extend * std::sqrt(std::max(p.c, T(0)));
        out_ext[2 * i] = ex;
        out_ext[2 * i + 1] = ey;
        const T rx = std::ceil(ex), ry = std::ceil(ey);
        const bool on_image = (mx + rx > 0) && (mx - rx < width) && (my + ry > 0) && (my - ry < height);
        const bool ok = p.in_depth && p.ok_det && op >= thr && on_image && std::isfinite(ex) && std::isfinite(ey);
        out_valid[i] = ok;
        out_r[2 * i] = ok ? static_cast<int32_t>(rx) : 0;
        out_r[2 * i + 1] = ok ? static_cast<int32_t>(ry) : 0;
      }
    }
  });
}

template <typename T>
void project_backward_impl(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                           const at::Tensor& viewmats, const at::Tensor& Ks, int width, int height,
                           double near_plane, double far_plane, double eps2d, const at::Tensor& v_means2d,
                           const at::Tensor& v_conics, const at::Tensor& v_depths, at::Tensor& v_means,
                           at::Tensor& v_quats, at::Tensor& v_scales) {
  const int64_t N = means.size(0), C = viewmats.size(0);
  const T* m = means.data_ptr<T>();
  const T* q = quats.data_ptr<T>();
  const T* s = scales.data_ptr<T>();
  const T* vm = viewmats.data_ptr<T>();
  const T* ks = Ks.data_ptr<T>();
  const T* g_m2 = v_means2d.data_ptr<T>();
  const T* g_con = v_conics.data_ptr<T>();
  const T* g_z = v_depths.data_ptr<T>();
  T* out_m = v_means.data_ptr<T>();
  T* out_q = v_quats.data_ptr<T>();
  T* out_s = v_scales.data_ptr<T>();
  at::parallel_for(0, N, 256, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const Rot<T> rot = rotation(q + 4 * n);
      T g_sigma[3][3] = {};  // dL/dSigma (world covariance), summed over cameras
      T g_mean[3] = {};
      for (int64_t c = 0; c < C; ++c) {
        const Projected<T> p = project_one(m + 3 * n, rot, s + 3 * n, vm + 16 * c, ks + 9 * c, width, height,
                                           T(near_plane), T(far_plane), T(eps2d));
        const int64_t i = c * N + n;
        // conic = (c, -b, a) / det  ->  gradient of the 2D covariance entries a, b, c
        const T v0 = g_con[3 * i], v1 = g_con[3 * i + 1], v2 = g_con[3 * i + 2];
        T va, vb, vc;
        if (p.ok_det) {
          const T inv = T(1) / p.det;
          const T k = (v0 * p.c - v1 * p.b + v2 * p.a) * inv * inv;
          va = v2 * inv - k * p.c;
          vb = -v1 * inv + T(2) * k * p.b;
          vc = v0 * inv - k * p.a;
        } else {  // det replaced by the constant 1
          va = v2;
          vb = -v1;
          vc = v0;
        }
        const T vs[2][2] = {{va, T(0.5) * vb}, {T(0.5) * vb, vc}};  // symmetric dL/dcov2d
        const T J[2][3] = {{p.fx / p.z, 0, -p.fx * p.u / p.z}, {0, p.fy / p.z, -p.fy * p.v / p.z}};
        // dL/dcov_c = J^T vs J; dL/dJ = 2 vs J cov_c
        T JS[2][3], g_cov_c[3][3], g_J[2][3];
        for (int r = 0; r < 2; ++r)
          for (int j = 0; j < 3; ++j) {
            T acc = 0;
            for (int k = 0; k < 3; ++k) acc += J[r][k] * p.cov_c[k][j];
            JS[r][j] = acc;
          }
        for (int r = 0; r < 2; ++r)
          for (int j = 0; j < 3; ++j) g_J[r][j] = T(2) * (vs[r][0] * JS[0][j] + vs[r][1] * JS[1][j]);
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b) {
            T acc = 0;
            for (int r = 0; r < 2; ++r)
              for (int t = 0; t < 2; ++t) acc += J[r][a] * vs[r][t] * J[t][b];
            g_cov_c[a][b] = acc;
          }
        // dL/dSigma += W^T g_cov_c W
        T tmp[3][3];
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b) {
            T acc = 0;
            for (int k = 0; k < 3; ++k) acc += p.W[k][a] * g_cov_c[k][b];
            tmp[a][b] = acc;
          }
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b) {
            T acc = 0;
            for (int k = 0; k < 3; ++k) acc += tmp[a][k] * p.W[k][b];
            g_sigma[a][b] += acc;
          }
        // camera-space mean through J, the clamp, means2d and depth
        const T z = p.z, z2 = p.z * p.z;
        T g_z_cam = -p.fx / z2 * g_J[0][0] + p.fx * p.u / z2 * g_J[0][2] - p.fy / z2 * g_J[1][1] +
                    p.fy * p.v / z2 * g_J[1][2];
        const T g_u = -p.fx / z * g_J[0][2], g_v = -p.fy / z * g_J[1][2];
        T g_x = 0, g_y = 0;
        if (p.tx > p.lo_x && p.tx < p.hi_x) {
          g_x += g_u / z;
          g_z_cam -= g_u * p.tx / z;
        }
        if (p.ty > p.lo_y && p.ty < p.hi_y) {
          g_y += g_v / z;
          g_z_cam -= g_v * p.ty / z;
        }
        const T gmx = g_m2[2 * i], gmy = g_m2[2 * i + 1];
        g_x += gmx * p.fx / z;
        g_y += gmy * p.fy / z;
        g_z_cam -= gmx * p.fx * p.x / z2 + gmy * p.fy * p.y / z2;
        g_z_cam += g_z[i];
        const T g_mc[3] = {g_x, g_y, p.in_depth ? g_z_cam : T(0)};
        for (int a = 0; a < 3; ++a) g_mean[a] += p.W[0][a] * g_mc[0] + p.W[1][a] * g_mc[1] + p.W[2][a] * g_mc[2];
      }
      for (int a = 0; a < 3; ++a) out_m[3 * n + a] = g_mean[a];
      // Sigma = M M^T with M = Rq diag(s): dL/dM = (G + G^T) M
      const T* sc = s + 3 * n;
      T M[3][3], g_M[3][3];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) M[a][b] = rot.R[a][b] * sc[b];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) {
          T acc = 0;
          for (int k = 0; k < 3; ++k) acc += (g_sigma[a][k] + g_sigma[k][a]) * M[k][b];
          g_M[a][b] = acc;
        }
      T gR[3][3];
      for (int b = 0; b < 3; ++b) {
        T acc = 0;
        for (int a = 0; a < 3; ++a) {
          acc += g_M[a][b] * rot.R[a][b];
          gR[a][b] = g_M[a][b] * sc[b];
        }
        out_s[3 * n + b] = acc;
      }
      // rotation matrix -> normalised quaternion -> raw quaternion
      const T w = rot.q[0], x = rot.q[1], y = rot.q[2], z = rot.q[3];
      T gq[4];
      gq[0] = 2 * (-z * gR[0][1] + y * gR[0][2] + z * gR[1][0] - x * gR[1][2] - y * gR[2][0] + x * gR[2][1]);
      gq[1] = 2 * (y * gR[0][1] + z * gR[0][2] + y * gR[1][0] - 2 * x * gR[1][1] - w * gR[1][2] + z * gR[2][0] +
                   w * gR[2][1] - 2 * x * gR[2][2]);
      gq[2] = 2 * (-2 * y * gR[0][0] + x * gR[0][1] + w * gR[0][2] + x * gR[1][0] + z * gR[1][2] - w * gR[2][0] +
                   z * gR[2][1] - 2 * y * gR[2][2]);
      gq[3] = 2 * (-2 * z * gR[0][0] - w * gR[0][1] + x * gR[0][2] + w * gR[1][0] - 2 * z * gR[1][1] + y * gR[1][2] +
                   x * gR[2][0] + y * gR[2][1]);
      const T dot = w * gq[0] + x * gq[1] + y * gq[2] + z * gq[3];
      for (int a = 0; a < 4; ++a) out_q[4 * n + a] = (gq[a] - rot.q[a] * dot) / rot.norm;
    }
  });
}

}  // namespace

std::vector<at::Tensor> project_forward(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                        const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks,
                                        int64_t width, int64_t height, double near_plane, double far_plane,
                                        double eps2d, double alpha_threshold, double max_extend) {
  const int64_t N = means.size(0), C = viewmats.size(0);
  const auto opts = means.options();
  at::Tensor means2d = at::empty({C, N, 2}, opts), conics = at::empty({C, N, 3}, opts);
  at::Tensor depths = at::empty({C, N}, opts), extents = at::empty({C, N, 2}, opts);
  at::Tensor radii = at::empty({C, N, 2}, opts.dtype(at::kInt)), valid = at::empty({C, N}, opts.dtype(at::kBool));
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "sie3d_project_forward", [&] {
    project_forward_impl<scalar_t>(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane,
                                   far_plane, eps2d, alpha_threshold, max_extend, means2d, conics, depths, radii,
                                   extents, valid);
  });
  return {means2d, conics, depths, radii, extents, valid};
}

std::vector<at::Tensor> project_backward(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                         const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                         int64_t height, double near_plane, double far_plane, double eps2d,
                                         const at::Tensor& v_means2d, const at::Tensor& v_conics,
                                         const at::Tensor& v_depths) {
  at::Tensor v_means = at::empty_like(means), v_quats = at::empty_like(quats), v_scales = at::empty_like(scales);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "sie3d_project_backward", [&] {
    project_backward_impl<scalar_t>(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
                                    v_means2d, v_conics, v_depths, v_means, v_quats, v_scales);
  });
  return {v_means, v_quats, v_scales};
}

}  // namespace sie3d
