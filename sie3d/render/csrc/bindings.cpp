// Python bindings of the CPU rasterizer (built by sie3d.render.cpu_kernel through torch.utils.cpp_extension).
#include <torch/extension.h>

#include "raster.h"

namespace {

std::vector<at::Tensor> composite_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& opacities, const at::Tensor& features,
                                          const at::Tensor& depths, const at::Tensor& extents, const at::Tensor& valid,
                                          int64_t width, int64_t height, int64_t tile_size,
                                          const std::vector<double>& rule) {
  TORCH_CHECK(rule.size() == 4, "rule: alpha_threshold, alpha_max, transmittance_min, sigma_max");
  return sie3d::composite_forward(means2d, conics, opacities, features, depths, extents, valid, width, height,
                                  tile_size, {rule[0], rule[1], rule[2], rule[3]});
}

std::vector<at::Tensor> composite_backward(const at::Tensor& means2d, const at::Tensor& conics,
                                           const at::Tensor& opacities, const at::Tensor& features,
                                           const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                                           const at::Tensor& n_last, const at::Tensor& v_acc,
                                           const at::Tensor& v_trans, int64_t width, int64_t height,
                                           int64_t tile_size, const std::vector<double>& rule) {
  TORCH_CHECK(rule.size() == 4, "rule: alpha_threshold, alpha_max, transmittance_min, sigma_max");
  return sie3d::composite_backward(means2d, conics, opacities, features, tile_offsets, tile_ids, n_last, v_acc,
                                   v_trans, width, height, tile_size, {rule[0], rule[1], rule[2], rule[3]});
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sie3d CPU rasterizer: projection and tiled compositing, forward and backward";
  m.def("project_forward", &sie3d::project_forward);
  m.def("project_backward", &sie3d::project_backward);
  m.def("composite_forward", &composite_forward);
  m.def("composite_backward", &composite_backward);
}
