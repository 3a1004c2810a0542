// Tile binning, depth sorting and front-to-back compositing with early termination, forward and
// backward, on the CPU. Mirrors sie3d.render.rasterize.composite_tiled / composite_dense.
//
// Forward: per camera, the valid Gaussians whose opacity-aware boxes cover a pixel centre are sorted
// by depth (a radix sort of the depths' bits; ties by index, as a stable argsort) and binned to the
// tiles their boxes touch, so every tile's list is depth-ordered. Each pixel walks its tile's list: alpha = min(alpha_max, o exp(-sigma)); alphas
// below the threshold are skipped; the pixel stops at the first Gaussian that would bring its
// transmittance to <= transmittance_min (that Gaussian excluded). Per pixel it keeps the
// accumulated features, the final transmittance and how far along the list it went.
//
// Backward: each pixel replays its walk front to back (transmittance before every contributor, no
// divisions), then goes back to front with the features composited behind each contributor.
// Gradients are accumulated per (tile, Gaussian) pair, then summed per Gaussian in a fixed order (the
// tiles', whichever worker owns the Gaussian), so they are the same bits whatever the number of
// threads and the order tiles are processed in.
//
// Tiles are processed by at::parallel_for workers pulling from a queue, the longest lists first.

#include "raster.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <cmath>
#include <limits>
#include <numeric>

namespace sie3d {
namespace {

constexpr int kBlock = 8;  // Gaussians whose exponents are evaluated together (one SIMD block)
constexpr int64_t kMaxFeatures = 16;  // composited channels per Gaussian (the renderer uses 4: RGB + depth)

// exp(-s) for s in [-1, sigma_max] on kBlock floats at once (GCC/Clang vector extensions, lowered
// to the baseline SIMD of the target: no -march flags needed): a Cody-Waite reduction and a degree-6
// polynomial, relative error < 3e-7. Doubles (the tests' finite differences) use std::exp.
typedef float FloatBlock __attribute__((vector_size(kBlock * sizeof(float))));
typedef int32_t IntBlock __attribute__((vector_size(kBlock * sizeof(int32_t))));

inline FloatBlock exp_neg(FloatBlock s) {
  const FloatBlock x = -s;
  const FloatBlock n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  const FloatBlock r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  FloatBlock p = r * 1.3888889e-3f + 8.3333333e-3f;
  p = p * r + 4.1666667e-2f;
  p = p * r + 1.6666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const IntBlock bits = (__builtin_convertvector(n, IntBlock) + 127) << 23;  // 2^n
  return p * reinterpret_cast<const FloatBlock&>(bits);
}

inline FloatBlock load_block(const float* p) {
  FloatBlock v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline bool any_lane(IntBlock mask) {
  uint64_t words[sizeof mask / 8];
  std::memcpy(words, &mask, sizeof mask);
  uint64_t acc = 0;
  for (uint64_t w : words) acc |= w;
  return acc != 0;
}

struct Grid {
  int64_t width, height, ts, tiles_x, tiles_y, per_image;
  Grid(int64_t w, int64_t h, int64_t t)
      : width(w), height(h), ts(t), tiles_x((w + t - 1) / t), tiles_y((h + t - 1) / t), per_image(tiles_x * tiles_y) {}
};

// An unsigned integer ordered as the depths: IEEE bits with the sign bit flipped (all bits for
// negatives); -0 counts as +0, so equal depths get equal keys.
inline uint32_t depth_key(float z) {
  uint32_t b;
  z += 0.0f;
  std::memcpy(&b, &z, sizeof b);
  return b & 0x80000000u ? ~b : b | 0x80000000u;
}
inline uint64_t depth_key(double z) {
  uint64_t b;
  z += 0.0;
  std::memcpy(&b, &z, sizeof b);
  return b & (uint64_t(1) << 63) ? ~b : b | (uint64_t(1) << 63);
}

// ids reordered by keys, stably (ties keep their order): least-significant-byte radix sort.
template <typename K>
void radix_sort(std::vector<int32_t>& ids, std::vector<K>& keys) {
  std::vector<int32_t> ids_to(ids.size());
  std::vector<K> keys_to(keys.size());
  for (int shift = 0; shift < int(8 * sizeof(K)); shift += 8) {
    size_t start[257] = {0};
    for (K k : keys) ++start[((k >> shift) & 255) + 1];
    if (*std::max_element(start + 1, start + 257) == keys.size()) continue;  // one byte value: nothing moves
    std::partial_sum(start, start + 257, start);
    for (size_t i = 0; i < keys.size(); ++i) {
      const size_t to = start[(keys[i] >> shift) & 255]++;
      ids_to[to] = ids[i], keys_to[to] = keys[i];
    }
    ids.swap(ids_to), keys.swap(keys_to);
  }
}

// Depth-sorted tile lists: tile_offsets [C * per_image + 1] (int64), tile_ids [pairs] (int32 Gaussian
// index within its camera). Gaussians whose boxes cover no pixel centre are dropped before sorting.
template <typename T>
std::pair<at::Tensor, at::Tensor> bin_tiles(const at::Tensor& means2d, const at::Tensor& depths,
                                            const at::Tensor& extents, const at::Tensor& valid, const Grid& g) {
  const int64_t C = means2d.size(0), N = means2d.size(1);
  const T* m2 = means2d.data_ptr<T>();
  const T* z = depths.data_ptr<T>();
  const T* ext = extents.data_ptr<T>();
  const bool* ok = valid.data_ptr<bool>();
  std::vector<int32_t> rects(4 * C * N);  // per Gaussian: tile x0, y0, x1, y1 (x1 < x0 if it covers no pixel)
  at::parallel_for(0, C * N, 4096, [&](int64_t begin, int64_t end) {
    const T limit[2] = {T(g.width - 1), T(g.height - 1)};
    for (int64_t i = begin; i < end; ++i) {
      int32_t* ri = &rects[4 * i];
      T lo[2], hi[2];
      bool empty = !ok[i];
      for (int d = 0; d < 2 && !empty; ++d) {  // pixel centres i + 0.5 inside [mean - ext, mean + ext], conservatively
        const T e = ext[2 * i + d] * T(1 + 1e-4) + T(1e-3);
        lo[d] = std::max(std::ceil(m2[2 * i + d] - e - T(0.5)), T(0));
        hi[d] = std::min(std::floor(m2[2 * i + d] + e - T(0.5)), limit[d]);
        empty = !(hi[d] >= lo[d]);
      }
      if (empty) {
        ri[0] = 1, ri[1] = 0, ri[2] = 0, ri[3] = 0;
        continue;
      }
      ri[0] = static_cast<int32_t>(lo[0]) / g.ts, ri[1] = static_cast<int32_t>(lo[1]) / g.ts;
      ri[2] = static_cast<int32_t>(hi[0]) / g.ts, ri[3] = static_cast<int32_t>(hi[1]) / g.ts;
    }
  });
  std::vector<std::vector<int32_t>> order(C);
  at::Tensor offsets = at::zeros({C * g.per_image + 1}, at::kLong);
  int64_t* off = offsets.data_ptr<int64_t>();
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      std::vector<int32_t>& ids = order[c];
      std::vector<decltype(depth_key(T(0)))> keys;
      int64_t* counts = off + 1 + c * g.per_image;
      for (int64_t n = 0; n < N; ++n) {
        const int32_t* r = &rects[4 * (c * N + n)];
        if (r[2] < r[0]) continue;
        ids.push_back(static_cast<int32_t>(n)), keys.push_back(depth_key(z[c * N + n]));
        for (int32_t ty = r[1]; ty <= r[3]; ++ty)
          for (int32_t tx = r[0]; tx <= r[2]; ++tx) ++counts[ty * g.tiles_x + tx];
      }
      radix_sort(ids, keys);  // by depth, ties by index (ids were increasing)
    }
  });
  std::partial_sum(off, off + C * g.per_image + 1, off);
  at::Tensor tile_ids = at::empty({off[C * g.per_image]}, at::kInt);
  int32_t* out = tile_ids.data_ptr<int32_t>();
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      std::vector<int64_t> cursor(off + c * g.per_image, off + (c + 1) * g.per_image);
      for (const int32_t n : order[c]) {
        const int32_t* r = &rects[4 * (c * N + n)];
        for (int32_t ty = r[1]; ty <= r[3]; ++ty)
          for (int32_t tx = r[0]; tx <= r[2]; ++tx) out[cursor[ty * g.tiles_x + tx]++] = n;
      }
    }
  });
  return {offsets, tile_ids};
}

// One tile's Gaussians gathered into contiguous arrays, padded to a multiple of kBlock with entries
// that are always skipped.
template <typename T>
struct TileGaussians {
  int64_t count = 0, padded = 0, D = 0;
  std::vector<T> mx, my, ca, cb, cc, op, cut, feat;

  void gather(const int32_t* ids, int64_t n, int64_t cam, int64_t N, int64_t dim, const T* m2, const T* con,
              const T* opac, const T* feats, T alpha_threshold) {
    count = n, D = dim, padded = (n + kBlock - 1) / kBlock * kBlock;
    for (auto* v : {&mx, &my, &ca, &cb, &cc, &op, &cut}) v->assign(padded, T(0));
    std::fill(cut.begin() + n, cut.end(), T(-1));  // sigma = 0 > -1: skipped
    feat.assign(padded * D, T(0));
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = cam * N + ids[k];
      mx[k] = m2[2 * i], my[k] = m2[2 * i + 1];
      ca[k] = con[3 * i], cb[k] = con[3 * i + 1], cc[k] = con[3 * i + 2];
      op[k] = opac[i];
      // o exp(-sigma) < threshold for sigma > log(o / threshold): a margin of 1e-3 (far above
      // rounding) keeps the skip exact; the threshold test itself comes after the exp
      cut[k] = std::log(op[k] / alpha_threshold) + T(1e-3);
      std::copy(feats + i * D, feats + (i + 1) * D, &feat[k * D]);
    }
  }

  // Alphas of Gaussians [kb, kb + kBlock) at pixel centre (px, py) and their exp(-sigma), valid in
  // the lanes of the returned bit mask (those reaching the threshold); 0 when there are none.
  template <typename Rule>
  unsigned alphas(int64_t kb, T px, T py, const Rule& r, T* alpha, T* vis) const {
    T sig[kBlock];
    bool any = false;
    for (int j = 0; j < kBlock; ++j) {
      const T dx = mx[kb + j] - px, dy = my[kb + j] - py;
      sig[j] = T(0.5) * (ca[kb + j] * dx * dx + cc[kb + j] * dy * dy) + cb[kb + j] * dx * dy;
      any = any || sig[j] <= cut[kb + j];
    }
    if (!any) return 0;
    unsigned mask = 0;
    for (int j = 0; j < kBlock; ++j) {
      vis[j] = std::exp(-std::min(sig[j], r.smax));
      alpha[j] = std::min(r.amax, op[kb + j] * vis[j]);
      mask |= unsigned(sig[j] <= cut[kb + j] && alpha[j] >= r.thr) << j;
    }
    return mask;
  }
};

// The same for floats, all lanes at once (the hot loop of both passes).
template <>
template <typename Rule>
unsigned TileGaussians<float>::alphas(int64_t kb, float px, float py, const Rule& r, float* alpha, float* vis) const {
  const FloatBlock dx = load_block(&mx[kb]) - px, dy = load_block(&my[kb]) - py;
  const FloatBlock sig = 0.5f * (load_block(&ca[kb]) * dx * dx + load_block(&cc[kb]) * dy * dy) +
                         load_block(&cb[kb]) * dx * dy;
  const IntBlock inside = sig <= load_block(&cut[kb]);
  if (!any_lane(inside)) return 0;
  const FloatBlock v = exp_neg(sig < r.smax ? sig : r.smax);
  FloatBlock a = load_block(&op[kb]) * v;
  a = a < r.amax ? a : r.amax;
  const IntBlock kept = inside & (a >= r.thr);
  std::memcpy(alpha, &a, sizeof a);
  std::memcpy(vis, &v, sizeof v);
  unsigned mask = 0;
  for (int j = 0; j < kBlock; ++j) mask |= unsigned(kept[j] & 1) << j;
  return mask;
}

template <typename T>
struct TypedRule {
  T thr, amax, tmin, smax;
  explicit TypedRule(const Rule& r)
      : thr(T(r.alpha_threshold)), amax(T(r.alpha_max)), tmin(T(r.transmittance_min)), smax(T(r.sigma_max)) {}
};

// Run fn(tile) over the non-empty tiles, longest lists first, on at::get_num_threads() workers.
template <typename Fn>
void for_each_tile(const int64_t* off, int64_t n_tiles, Fn fn) {
  std::vector<int64_t> tiles;
  for (int64_t t = 0; t < n_tiles; ++t)
    if (off[t + 1] > off[t]) tiles.push_back(t);
  std::stable_sort(tiles.begin(), tiles.end(),
                   [off](int64_t a, int64_t b) { return off[a + 1] - off[a] > off[b + 1] - off[b]; });
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tiles.size()));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t k = next++; k < static_cast<int64_t>(tiles.size()); k = next++) fn(tiles[k]);
  });
}

template <typename T>
void forward_impl(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,
                  const at::Tensor& features, const at::Tensor& offsets, const at::Tensor& tile_ids, const Grid& g,
                  const Rule& rule, at::Tensor& acc, at::Tensor& trans, at::Tensor& n_last) {
  const int64_t C = means2d.size(0), N = means2d.size(1), D = features.size(2);
  const TypedRule<T> r(rule);
  const T *m2 = means2d.data_ptr<T>(), *con = conics.data_ptr<T>(), *opac = opacities.data_ptr<T>();
  const T* feats = features.data_ptr<T>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int32_t* ids = tile_ids.data_ptr<int32_t>();
  T* out_acc = acc.data_ptr<T>();
  T* out_t = trans.data_ptr<T>();
  int32_t* out_last = n_last.data_ptr<int32_t>();
  for_each_tile(off, C * g.per_image, [&](int64_t tile) {
    const int64_t cam = tile / g.per_image, t = tile % g.per_image;
    TileGaussians<T> tg;
    tg.gather(ids + off[tile], off[tile + 1] - off[tile], cam, N, D, m2, con, opac, feats, r.thr);
    const int64_t x0 = (t % g.tiles_x) * g.ts, y0 = (t / g.tiles_x) * g.ts;
    T sum[kMaxFeatures];
    T alpha[kBlock], vis[kBlock];
    for (int64_t y = y0; y < std::min(y0 + g.ts, g.height); ++y)
      for (int64_t x = x0; x < std::min(x0 + g.ts, g.width); ++x) {
        const T px = T(x) + T(0.5), py = T(y) + T(0.5);
        T tr = 1;
        int32_t last = 0;
        std::fill(sum, sum + D, T(0));
        bool done = false;
        for (int64_t kb = 0; kb < tg.padded && !done; kb += kBlock) {
          for (unsigned mask = tg.alphas(kb, px, py, r, alpha, vis); mask; mask &= mask - 1) {
            const int j = __builtin_ctz(mask);
            const T next = tr * (T(1) - alpha[j]);
            if (next <= r.tmin) {
              done = true;
              break;
            }
            const T w = alpha[j] * tr;
            const T* f = &tg.feat[(kb + j) * D];
            for (int64_t d = 0; d < D; ++d) sum[d] += w * f[d];
            tr = next;
            last = static_cast<int32_t>(kb + j + 1);
          }
        }
        const int64_t pix = (cam * g.height + y) * g.width + x;
        std::copy(sum, sum + D, out_acc + pix * D);
        out_t[pix] = tr;
        out_last[pix] = last;
      }
  });
}

template <typename T>
void backward_impl(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& opacities,
                   const at::Tensor& features, const at::Tensor& offsets, const at::Tensor& tile_ids,
                   const at::Tensor& n_last, const at::Tensor& v_acc, const at::Tensor& v_trans, const Grid& g,
                   const Rule& rule, at::Tensor& pair_grads, at::Tensor& total) {
  const int64_t C = means2d.size(0), N = means2d.size(1), D = features.size(2), S = 6 + D;
  const TypedRule<T> r(rule);
  const T *m2 = means2d.data_ptr<T>(), *con = conics.data_ptr<T>(), *opac = opacities.data_ptr<T>();
  const T* feats = features.data_ptr<T>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int32_t* ids = tile_ids.data_ptr<int32_t>();
  const int32_t* lasts = n_last.data_ptr<int32_t>();
  const T *g_acc = v_acc.data_ptr<T>(), *g_t = v_trans.data_ptr<T>();
  T* per_pair = pair_grads.data_ptr<T>();
  for_each_tile(off, C * g.per_image, [&](int64_t tile) {
    const int64_t cam = tile / g.per_image, t = tile % g.per_image, n = off[tile + 1] - off[tile];
    TileGaussians<T> tg;
    tg.gather(ids + off[tile], n, cam, N, D, m2, con, opac, feats, r.thr);
    T* local = per_pair + off[tile] * S;  // per list entry: mx, my, a, b, c, opacity, features (zeroed)
    std::vector<int32_t> hit(n);         // contributors of one pixel, front to back
    std::vector<T> hit_alpha(n), hit_t(n), hit_vis(n);
    T behind[kMaxFeatures];
    T alpha[kBlock], vis[kBlock];
    const int64_t x0 = (t % g.tiles_x) * g.ts, y0 = (t / g.tiles_x) * g.ts;
    for (int64_t y = y0; y < std::min(y0 + g.ts, g.height); ++y)
      for (int64_t x = x0; x < std::min(x0 + g.ts, g.width); ++x) {
        const int64_t pix = (cam * g.height + y) * g.width + x;
        const int64_t last = lasts[pix];
        if (last == 0) continue;
        const T px = T(x) + T(0.5), py = T(y) + T(0.5);
        int64_t h = 0;
        T tr = 1;
        for (int64_t kb = 0; kb < last; kb += kBlock) {
          for (unsigned mask = tg.alphas(kb, px, py, r, alpha, vis); mask; mask &= mask - 1) {
            const int j = __builtin_ctz(mask);
            if (kb + j >= last) break;
            hit[h] = static_cast<int32_t>(kb + j), hit_alpha[h] = alpha[j], hit_t[h] = tr, hit_vis[h] = vis[j];
            tr *= T(1) - alpha[j];
            ++h;
          }
        }
        const T* va = g_acc + pix * D;
        const T vt = g_t[pix];
        std::fill(behind, behind + D, T(0));
        T rest = 1;  // product of (1 - alpha) of the contributors behind
        for (int64_t j = h - 1; j >= 0; --j) {
          const int64_t k = hit[j];
          const T alpha = hit_alpha[j], tk = hit_t[j];
          const T* f = &tg.feat[k * D];
          T* lk = &local[k * S];
          T dot = 0;
          for (int64_t d = 0; d < D; ++d) {
            dot += va[d] * (f[d] - behind[d]);
            lk[6 + d] += alpha * tk * va[d];
            behind[d] = alpha * f[d] + (T(1) - alpha) * behind[d];
          }
          const T v_alpha = tk * (dot - vt * rest);
          rest *= T(1) - alpha;
          if (tg.op[k] * hit_vis[j] > r.amax) continue;  // clamped: no gradient to opacity or sigma
          lk[5] += v_alpha * hit_vis[j];
          const T v_sig = -v_alpha * alpha;
          const T dx = tg.mx[k] - px, dy = tg.my[k] - py;
          lk[0] += v_sig * (tg.ca[k] * dx + tg.cb[k] * dy);
          lk[1] += v_sig * (tg.cb[k] * dx + tg.cc[k] * dy);
          lk[2] += v_sig * T(0.5) * dx * dx;
          lk[3] += v_sig * dx * dy;
          lk[4] += v_sig * T(0.5) * dy * dy;
        }
      }
  });
  T* out = total.data_ptr<T>();  // [C, N, S], zeroed
  at::parallel_for(0, C * N, 1024, [&](int64_t begin, int64_t end) {  // each worker its own Gaussians, tiles in order
    for (int64_t tile = begin / N * g.per_image; tile < std::min(C, (end - 1) / N + 1) * g.per_image; ++tile) {
      const int64_t cam = tile / g.per_image;
      for (int64_t p = off[tile]; p < off[tile + 1]; ++p) {
        const int64_t i = cam * N + ids[p];
        if (i < begin || i >= end) continue;
        T* dst = out + i * S;
        for (int64_t e = 0; e < S; ++e) dst[e] += per_pair[p * S + e];
      }
    }
  });
}

void check_inputs(const std::vector<const at::Tensor*>& tensors) {
  for (const at::Tensor* t : tensors) {
    TORCH_CHECK(t->device().is_cpu(), "sie3d CPU rasterizer: tensors must be on the CPU");
    TORCH_CHECK(t->is_contiguous(), "sie3d CPU rasterizer: tensors must be contiguous");
  }
}

}  // namespace

std::vector<at::Tensor> composite_forward(const at::Tensor& means2d, const at::Tensor& conics,
                                          const at::Tensor& opacities, const at::Tensor& features,
                                          const at::Tensor& depths, const at::Tensor& extents, const at::Tensor& valid,
                                          int64_t width, int64_t height, int64_t tile_size, const Rule& rule) {
  check_inputs({&means2d, &conics, &opacities, &features, &depths, &extents, &valid});
  const Grid g(width, height, tile_size);
  const int64_t C = means2d.size(0), D = features.size(2);
  TORCH_CHECK(D <= kMaxFeatures, "sie3d CPU rasterizer: at most ", kMaxFeatures, " feature channels, got ", D);
  const auto opts = features.options();
  at::Tensor acc = at::zeros({C, height, width, D}, opts), trans = at::ones({C, height, width}, opts);
  at::Tensor n_last = at::zeros({C, height, width}, opts.dtype(at::kInt));
  at::Tensor offsets, tile_ids;
  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "sie3d_composite_forward", [&] {
    std::tie(offsets, tile_ids) = bin_tiles<scalar_t>(means2d, depths, extents, valid, g);
    forward_impl<scalar_t>(means2d, conics, opacities, features, offsets, tile_ids, g, rule, acc, trans, n_last);
  });
  return {acc, trans, n_last, offsets, tile_ids};
}

std::vector<at::Tensor> composite_backward(const at::Tensor& means2d, const at::Tensor& conics,
                                           const at::Tensor& opacities, const at::Tensor& features,
                                           const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                                           const at::Tensor& n_last, const at::Tensor& v_acc,
                                           const at::Tensor& v_trans, int64_t width, int64_t height,
                                           int64_t tile_size, const Rule& rule) {
  check_inputs({&means2d, &conics, &opacities, &features, &v_acc, &v_trans});
  const Grid g(width, height, tile_size);
  const int64_t C = means2d.size(0), N = means2d.size(1), D = features.size(2);
  at::Tensor pair_grads = at::zeros({tile_ids.numel(), 6 + D}, features.options());
  at::Tensor total = at::zeros({C, N, 6 + D}, features.options());
  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "sie3d_composite_backward", [&] {
    backward_impl<scalar_t>(means2d, conics, opacities, features, tile_offsets, tile_ids, n_last, v_acc, v_trans,
                            g, rule, pair_grads, total);
  });
  return {total.narrow(-1, 0, 2), total.narrow(-1, 2, 3), total.select(-1, 5), total.narrow(-1, 6, D)};
}

}  // namespace sie3d
