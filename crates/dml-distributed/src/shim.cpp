// The smallest C surface over PyTorch's c10d (shipped inside libtorch_cpu.so) that
// dml-distributed needs: a rendezvous store, a Gloo process group (or, with DML_WITH_NCCL, an
// NCCL one from libtorch_cuda.so), and four collectives that serve either.
// Every function returns nullptr on success or a malloc'd error message the caller frees with
// dml_dist_free. No gloo type is used here except through the shared_ptr that c10d hands back,
// so the gloo headers (needed only because ProcessGroupGloo.hpp includes them) fix no layout
// this file depends on; docs/design.md has the full argument.
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifdef DML_WITH_NCCL
// Needs USE_C10D_NCCL (or the header is empty) and the CUDA runtime and NCCL headers of the
// packages LibTorch was built against (build.rs finds them in the CUDA venv).
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

struct dml_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct dml_pg {
  // ProcessGroupGloo or ProcessGroupNCCL: the collectives below use only Backend's virtuals.
  c10::intrusive_ptr<c10d::Backend> pg;
  // NCCL groups are shut down before they are freed (as destroy_process_group does).
  bool nccl = false;
  // The flattened bucket of the last multi-tensor all-reduce or broadcast, kept so that a
  // training loop's per-step gradient bucket is allocated once, not every step.
  at::Tensor bucket;
};

namespace {

char* copy_message(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

template <typename F>
char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("unknown C++ exception in c10d");
  }
}

// Gloo: returns when the collective is done. NCCL: makes the calling thread's current CUDA
// stream wait for the collective's stream (the CPU goes on, except for barrier, which blocks
// until the current stream is done), so any later work on the current stream, the stream tch's
// operations use, sees the result; the copies into and out of the bucket run on that stream
// too, and c10d makes its own stream wait for it before the collective starts.
void wait(const c10::intrusive_ptr<c10d::Work>& work) {
  work->wait();
}

// One tensor that is already contiguous travels as it is; several are copied into the group's
// reused bucket (grown when too small), and `scatter_back` copies the result out again.
at::Tensor gather_into_bucket(dml_pg* p, at::Tensor** tensors, size_t n) {
  if (n == 1 && tensors[0]->is_contiguous()) {
    return *tensors[0];
  }
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    total += tensors[i]->numel();
  }
  const auto& first = *tensors[0];
  if (!p->bucket.defined() || p->bucket.numel() < total ||
      p->bucket.scalar_type() != first.scalar_type() || p->bucket.device() != first.device()) {
    p->bucket = at::empty({total}, first.options());
  }
  at::Tensor bucket = p->bucket.narrow(0, 0, total);
  int64_t offset = 0;
  for (size_t i = 0; i < n; ++i) {
    int64_t len = tensors[i]->numel();
    bucket.narrow(0, offset, len).view(tensors[i]->sizes()).copy_(*tensors[i]);
    offset += len;
  }
  return bucket;
}

void scatter_back(const at::Tensor& bucket, at::Tensor** tensors, size_t n) {
  if (n == 1 && bucket.is_same(*tensors[0])) {
    return;
  }
  int64_t offset = 0;
  for (size_t i = 0; i < n; ++i) {
    int64_t len = tensors[i]->numel();
    tensors[i]->copy_(bucket.narrow(0, offset, len).view(tensors[i]->sizes()));
    offset += len;
  }
}

}  // namespace

extern "C" {

void dml_dist_free(void* p) {
  std::free(p);
}

char* dml_store_tcp(const char* host, uint16_t port, int is_server, int world,
                    int64_t timeout_ms, dml_store** out) {
  return guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = world;
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new dml_store{store};
  });
}

char* dml_store_file(const char* path, int world, dml_store** out) {
  return guarded([&] {
    auto store = c10::make_intrusive<c10d::FileStore>(std::string(path), world);
    *out = new dml_store{store};
  });
}

char* dml_store_prefixed(dml_store* base, const char* prefix, dml_store** out) {
  return guarded([&] {
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), base->store);
    *out = new dml_store{store};
  });
}

void dml_store_free(dml_store* s) {
  delete s;
}

char* dml_store_set(dml_store* s, const char* key, const uint8_t* data, size_t len) {
  return guarded([&] { s->store->set(std::string(key), std::vector<uint8_t>(data, data + len)); });
}

// Sets *found to 0 when the key does not exist (without waiting); otherwise returns its value.
char* dml_store_try_get(dml_store* s, const char* key, int* found, uint8_t** data, size_t* len) {
  return guarded([&] {
    std::string k(key);
    *found = 0;
    if (!s->store->check({k})) {
      return;
    }
    auto value = s->store->get(k);
    *data = static_cast<uint8_t*>(std::malloc(value.size() > 0 ? value.size() : 1));
    std::memcpy(*data, value.data(), value.size());
    *len = value.size();
    *found = 1;
  });
}

char* dml_store_add(dml_store* s, const char* key, int64_t delta, int64_t* value) {
  return guarded([&] { *value = s->store->add(std::string(key), delta); });
}

// `host` names this rank's own address for the Gloo transport (by_interface = 0) or a network
// interface (by_interface = 1); empty: c10d's default (the host name's address, else loopback).
char* dml_pg_gloo(dml_store* s, int rank, int world, int64_t timeout_ms, const char* host,
                  int by_interface, int threads, dml_pg** out) {
  return guarded([&] {
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    std::string h(host);
    if (h.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    } else if (by_interface != 0) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(h));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(h));
    }
    if (threads > 0) {
      opts->threads = threads;
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(s->store, rank, world, opts);
    *out = new dml_pg{pg};
  });
}

#ifdef DML_WITH_NCCL
// An NCCL group on CUDA device `device_index`, which becomes this thread's current device and
// the group's bound device (barrier runs there). The NCCL communicator itself is created at the
// first collective, exchanging its id through the store. `timeout_ms` is the watchdog's limit
// per collective: past it, c10d's watchdog aborts the communicator and (by default,
// TORCH_NCCL_ASYNC_ERROR_HANDLING) ends the process rather than returning an error.
char* dml_pg_nccl(dml_store* s, int rank, int world, int64_t timeout_ms, int device_index,
                  dml_pg** out) {
  return guarded([&] {
    int visible = c10::cuda::device_count();
    if (visible <= 0) {
      throw std::runtime_error(
          "the NCCL backend needs a CUDA device, and this process sees none (no GPU, no "
          "driver, or CUDA_VISIBLE_DEVICES hides them)");
    }
    if (device_index < 0 || device_index >= visible) {
      throw std::runtime_error("CUDA device " + std::to_string(device_index) +
                               " does not exist: this process sees " +
                               std::to_string(visible));
    }
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(s->store, rank, world, opts);
    pg->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)));
    *out = new dml_pg{pg, true};
  });
}
#endif

void dml_pg_free(dml_pg* p) {
  if (p != nullptr && p->nccl) {
    try {
      p->pg->shutdown();
    } catch (...) {
      // A group that cannot shut down cleanly (a peer died) is freed all the same.
    }
  }
  delete p;
}

// Sums `n` tensors (one dtype, one device) over the ranks, in place, as one flattened bucket.
char* dml_pg_allreduce_sum(dml_pg* p, at::Tensor** tensors, size_t n) {
  return guarded([&] {
    at::NoGradGuard no_grad;
    if (n == 0) {
      return;
    }
    std::vector<at::Tensor> bucket{gather_into_bucket(p, tensors, n)};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    wait(p->pg->allreduce(bucket, opts));
    scatter_back(bucket[0], tensors, n);
  });
}

// Gathers `input` (same shape on every rank) into one new tensor of `world` times its rows,
// rank by rank (c10d's flat all-gather: no per-rank output tensors, no copy out of a staging
// buffer).
char* dml_pg_allgather(dml_pg* p, at::Tensor* input, at::Tensor** output) {
  return guarded([&] {
    at::NoGradGuard no_grad;
    int world = p->pg->getSize();
    at::Tensor in = input->contiguous();
    std::vector<int64_t> shape = in.sizes().vec();
    if (shape.empty()) {
      shape.push_back(1);
      in = in.reshape({1});
    }
    shape[0] *= world;
    at::Tensor out = at::empty(shape, in.options());
    wait(p->pg->_allgather_base(out, in));
    *output = new at::Tensor(out);
  });
}

// Replaces `n` tensors (one dtype) on every rank with root's, in place, as one flattened
// bucket (c10d's broadcast of several tensors means copies on several devices, not a list).
char* dml_pg_broadcast(dml_pg* p, at::Tensor** tensors, size_t n, int root) {
  return guarded([&] {
    at::NoGradGuard no_grad;
    if (n == 0) {
      return;
    }
    std::vector<at::Tensor> bucket{gather_into_bucket(p, tensors, n)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    wait(p->pg->broadcast(bucket, opts));
    scatter_back(bucket[0], tensors, n);
  });
}

char* dml_pg_barrier(dml_pg* p) {
  return guarded([&] { wait(p->pg->barrier()); });
}

}  // extern "C"
