#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif
#include <pthread.h>

namespace fastretrieve {
namespace {

class ThreadPool {
public:
    void run(std::size_t n_tasks, std::size_t threads,
             const std::function<void(std::size_t)>& task) {
        // More threads than cores only time-share them, and workers are kept for the
        // life of the process: the pool never grows beyond the cores available.
        threads = std::min(threads, default_thread_count());
        std::unique_lock<std::mutex> exclusive(run_mutex_, std::try_to_lock);
        if (!exclusive || threads <= 1 || n_tasks <= 1) {
            for (std::size_t i = 0; i < n_tasks; ++i) task(i);
            return;
        }
        const std::size_t helpers = (threads < n_tasks ? threads : n_tasks) - 1;
        {
            std::lock_guard<std::mutex> lock(state_mutex_);
            ensure_workers(helpers);
            task_ = &task;
            n_tasks_ = n_tasks;
            next_.store(0);
            error_ = nullptr;
            helpers_wanted_ = helpers;
            helpers_running_ = helpers;
            ++generation_;
        }
        wake_.notify_all();
        drain();
        std::unique_lock<std::mutex> lock(state_mutex_);
        done_.wait(lock, [this] { return helpers_running_ == 0; });
        task_ = nullptr;
        if (error_) std::rethrow_exception(error_);
    }

private:
    // Called with state_mutex_ held.
    void ensure_workers(std::size_t count) {
        while (workers_.size() < count) {
            const std::size_t index = workers_.size();
            workers_.emplace_back([this, index] { worker_loop(index); });
        }
    }

    void worker_loop(std::size_t index) {
        unsigned long long seen = 0;
        std::unique_lock<std::mutex> lock(state_mutex_);
        for (;;) {
            wake_.wait(lock, [&] { return generation_ != seen; });
            seen = generation_;
            if (index >= helpers_wanted_) continue;
            lock.unlock();
            drain();
            lock.lock();
            if (--helpers_running_ == 0) done_.notify_one();
        }
    }

    void drain() {
        for (;;) {
            const std::size_t i = next_.fetch_add(1);
            if (i >= n_tasks_) return;
            try {
                (*task_)(i);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex_);
                if (!error_) error_ = std::current_exception();
                next_.store(n_tasks_);  // hand out nothing more
            }
        }
    }

    std::mutex run_mutex_;    // one parallel_for at a time owns the workers
    std::mutex state_mutex_;  // guards everything below except next_ and error_
    std::mutex error_mutex_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> workers_;
    unsigned long long generation_ = 0;
    const std::function<void(std::size_t)>* task_ = nullptr;
    std::size_t n_tasks_ = 0;
    std::size_t helpers_wanted_ = 0;
    std::size_t helpers_running_ = 0;
    std::atomic<std::size_t> next_{0};
    std::exception_ptr error_;
};

std::atomic<ThreadPool*> g_pool{nullptr};

// Threads, and the state of mutexes and condition variables they were using, do not
// survive fork(): a child process abandons the parent's pool and lazily builds its own.
void forget_pool_in_child() { g_pool.store(nullptr); }

// Never destroyed: joining workers during interpreter shutdown can deadlock, and the
// operating system reclaims the threads at exit.
ThreadPool& shared_pool() {
    ThreadPool* pool = g_pool.load(std::memory_order_acquire);
    if (pool) return *pool;
    static const int registered = pthread_atfork(nullptr, nullptr, &forget_pool_in_child);
    (void)registered;
    ThreadPool* fresh = new ThreadPool();
    if (g_pool.compare_exchange_strong(pool, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread won the race; no worker was started yet
    return *pool;
}

}  // namespace

std::size_t default_thread_count() {
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        const int count = CPU_COUNT(&set);
        if (count > 0) return static_cast<std::size_t>(count);
    }
#endif
    const unsigned hw = std::thread::hardware_concurrency();
    return hw ? hw : 1;
}

void parallel_for(std::size_t n_tasks, std::size_t threads,
                  const std::function<void(std::size_t)>& task) {
    shared_pool().run(n_tasks, threads, task);
}

}  // namespace fastretrieve
