// Declarations of the CPU rasterizer kernels (see project.cpp, composite.cpp, bindings.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace sie3d {

// Thresholds of the compositing rule, passed from sie3d.render.rasterize (the one place they live).
struct Rule {
  double alpha_threshold;  // contributions below this alpha are skipped
  double alpha_max;        // alpha clamp
  double transmittance_min;  // a pixel stops before its transmittance would reach this
  double sigma_max;        // exponent cap
};

std::vector<at::Tensor> project_forward(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                        const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks,
                                        int64_t width, int64_t height, double near_plane, double far_plane,
                                        double eps2d, double alpha_threshold, double max_extend);

std::vector<at::Tensor> project_backward(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                                         const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
                                         int64_t height, double near_plane, double far_plane, double eps2d,
                                         const at::Tensor& v_means2d, const at::Tensor& v_conics,
                                         const at::Tensor& v_depths);

std::vector<at::Tensor> composite_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& opacities, const at::Tensor& features,
                                          const at::Tensor& depths, const at::Tensor& extents, const at::Tensor& valid,
                                          int64_t width, int64_t height, int64_t tile_size, const Rule& rule);

std::vector<at::Tensor> composite_backward(const at::Tensor& means2d, const at::Tensor& conics,
                                           const at::Tensor& opacities, const at::Tensor& features,
                                           const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                                           const at::Tensor& n_last, const at::Tensor& v_acc,
                                           const at::Tensor& v_trans, int64_t width, int64_t height,
                                           int64_t tile_size, const Rule& rule);

}  // namespace sie3d
