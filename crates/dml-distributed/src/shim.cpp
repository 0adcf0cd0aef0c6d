// The smallest C surface over PyTorch's c10d (shipped inside libtorch_cpu.so) that
// dml-distributed needs: a rendezvous store, a Gloo process group, and four collectives.
// Every function returns nullptr on success or a malloc'd error message the caller frees with
// dml_dist_free. No gloo type is used here except through the shared_ptr that c10d hands back,
// so the gloo headers (needed only because ProcessGroupGloo.hpp includes them) fix no layout
// this file depends on; docs/design.md has the full argument.
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct dml_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct dml_pg {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
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

void wait(const c10::intrusive_ptr<c10d::Work>& work) {
  work->wait();
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

void dml_pg_free(dml_pg* p) {
  delete p;
}

// Sums `n` tensors (one dtype, one device) over the ranks, in place, as one flattened bucket.
char* dml_pg_allreduce_sum(dml_pg* p, at::Tensor** tensors, size_t n) {
  return guarded([&] {
    at::NoGradGuard no_grad;
    if (n == 0) {
      return;
    }
    std::vector<at::Tensor> flat;
    flat.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      flat.push_back(tensors[i]->reshape({-1}));
    }
    std::vector<at::Tensor> bucket{at::cat(flat)};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    wait(p->pg->allreduce(bucket, opts));
    int64_t offset = 0;
    for (size_t i = 0; i < n; ++i) {
      int64_t len = tensors[i]->numel();
      tensors[i]->copy_(bucket[0].narrow(0, offset, len).view(tensors[i]->sizes()));
      offset += len;
    }
  });
}

// Gathers `input` (same shape on every rank) into `world` new tensors, written to outputs[r].
char* dml_pg_allgather(dml_pg* p, at::Tensor* input, at::Tensor** outputs) {
  return guarded([&] {
    at::NoGradGuard no_grad;
    int world = p->pg->getSize();
    at::Tensor in = input->contiguous();
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < world; ++r) {
      out[0].push_back(at::empty_like(in));
    }
    std::vector<at::Tensor> ins{in};
    wait(p->pg->allgather(out, ins));
    for (int r = 0; r < world; ++r) {
      outputs[r] = new at::Tensor(out[0][r]);
    }
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
    std::vector<at::Tensor> flat;
    flat.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      flat.push_back(tensors[i]->reshape({-1}));
    }
    std::vector<at::Tensor> bucket{at::cat(flat)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    wait(p->pg->broadcast(bucket, opts));
    int64_t offset = 0;
    for (size_t i = 0; i < n; ++i) {
      int64_t len = tensors[i]->numel();
      tensors[i]->copy_(bucket[0].narrow(0, offset, len).view(tensors[i]->sizes()));
      offset += len;
    }
  });
}

char* dml_pg_barrier(dml_pg* p) {
  return guarded([&] { wait(p->pg->barrier()); });
}

}  // extern "C"
