// A persistent thread pool of our own (no OpenMP: its runtimes clash with those inside
// PyTorch and ONNX Runtime and oversubscribe the cores).
#pragma once

#include <cstddef>
#include <functional>

namespace fastretrieve {

// Cores this process may run on (affinity mask), at least 1.
std::size_t default_thread_count();

// Runs task(i) for every i in [0, n_tasks) on up to `threads` threads, the calling thread
// included, and never more threads than default_thread_count() (the tasks are the same,
// fewer threads run them), and returns when all are done. The first exception thrown by a task stops
// the hand-out of further tasks and is rethrown here. When another call is already using
// the pool (a concurrent search from another Python thread), this call runs its tasks
// on the calling thread alone rather than wait: both make progress, neither deadlocks.
void parallel_for(std::size_t n_tasks, std::size_t threads,
                  const std::function<void(std::size_t)>& task);

}  // namespace fastretrieve
