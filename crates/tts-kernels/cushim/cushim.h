// cushim.h -- runs the project's CUDA C++ kernels (kernels/*.cu, the same files NVRTC compiles for
// the GPU) on the CPU, for the `Emu` backend of tts-kernels.
//
// Execution model
//   * A launch runs its blocks on a few OS worker threads (CUSHIM_WORKERS, default: all cores);
//     each worker runs one block at a time to completion.
//   * Each CUDA thread of a block is a fiber with its own stack (64 KiB + a guard page;
//     CUSHIM_STACK overrides). Fibers are cooperative: a fiber runs until it waits at
//     __syncthreads() or a warp-synchronous intrinsic, then switches straight to the next runnable
//     fiber in the block's schedule order.
//   * The schedule order is a launch option: forward, reverse or seeded random. Running a test in
//     several orders exposes missing barriers (a GPU hides them by luck).
//   * __shared__ is `thread_local`: all fibers of a block (same worker) share one copy. The build
//     script follows every static `__shared__` declaration with touch_static_smem(), which poisons
//     the array with 0xFF bytes (NaN / -1) at its first touch in each block, so no block sees what
//     the previous block on its worker left there. Dynamic shared memory (`extern __shared__ T
//     name[]`) is defined by cushim_dyn_smem.h and poisoned at the start of every block.
//   * Shared-memory limits as on a GPU (section 3a): static + dynamic bytes at most 48 KiB unless
//     the launch opted in, and at most the modelled device's opt-in maximum.
//   * Warp intrinsics (__shfl*_sync, votes, __syncwarp) go through a per-warp exchange area and a
//     warp barrier over the mask, with the PTX shfl.sync lane formulas.
//
// Checks a GPU does not give: deadlocks (with the waiting threads and their call sites),
// __syncthreads() from different call sites in one barrier, threads exiting while others wait at
// a barrier, warp intrinsics whose mask omits the caller or names exited lanes, source lanes
// outside the mask, lanes of one mask meeting at different shuffle/vote call sites, and (with
// race_check) two threads writing the same shared byte between two barriers (section 3b). In strict mode (the default of the Rust Emu backend) every such finding fails
// the launch with a message; otherwise it is a warning on stderr.
//
// Portability: the fiber switch is 7 instructions of x86-64 assembly (SysV). Elsewhere (aarch64,
// ...) it falls back to ucontext, which is correct but about 30x slower per switch.
//
// Kernels must not include CUDA headers: the project's kernels use raw-bit bf16 helpers from
// kernels/common.cuh, so neither NVRTC nor this shim needs the CUDA toolkit headers.
#pragma once
#define CUSHIM 1

// ---- 1. execution-space qualifiers
#define __global__
#define __device__
#define __host__
#define __shared__ thread_local  // block scope: implies static; `extern __shared__` works too
#define __constant__
#define __managed__
#define __forceinline__ __attribute__((always_inline)) inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <sys/mman.h>
#include <unistd.h>
#include "cushim_dyn_smem.h"
#if !defined(__x86_64__)
#include <ucontext.h>
#define CUSHIM_UCONTEXT 1
#endif

// ---- 2. vector types (the subset NVRTC has built in)
struct __align__(8) float2 { float x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(8) uint2 { unsigned x, y; };
struct __align__(16) uint4 { unsigned x, y, z, w; };
struct __align__(4) ushort2 { unsigned short x, y; };
struct __align__(8) ushort4 { unsigned short x, y, z, w; };
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- 3. options shared with the Rust side (crates/tts-kernels/src/emu/mod.rs, LaunchOpts, mirrors this)
extern "C" {
struct cushim_launch_opts {
    unsigned order;   // 0 = forward, 1 = reverse, 2 = random (seeded)
    unsigned seed;    // for order 2
    unsigned strict;  // 1: every finding (warning) fails the launch
    unsigned workers; // 0: CUSHIM_WORKERS or the number of cores
    // shared memory (see src/launch.rs): the modelled device's limits and the kernel's opt-in
    unsigned smem_optin_max;    // bytes (static + dynamic) one block may use after opting in
    unsigned smem_max_dynamic;  // the kernel's MAX_DYNAMIC_SHARED_SIZE_BYTES as raised by the launch
                                // code; 0 = never raised (then 48 KiB minus the static size, as CUDA)
    unsigned smem_auto_opt_in;  // 1: the launch code did not know the static size yet (the kernel's
                                // first launch): opt in here when static + dynamic > 48 KiB, as it would
    unsigned race_check;        // 1: the shared-memory write-write race detector (section 3b)
    // outputs
    unsigned out_static_smem;   // the most static __shared__ bytes one block registered
    unsigned out_opted_in;      // 1: smem_auto_opt_in opted in (the kernel's maximum is now the dynamic size)
    unsigned out_smem_limit;    // nonzero: the launch failed on shared memory; the limit it passed
    unsigned out_pad;
};
}

namespace cushim {

enum FState : uint8_t { RUNNABLE, WAIT_BAR, WAIT_WARP, DONE };
struct Block;
struct Fiber {
#ifdef CUSHIM_UCONTEXT
    ucontext_t uc;
#endif
    void* sp = nullptr;     // saved stack pointer (asm switch)
    char* stack = nullptr;  // base of this fiber's stack area
    Block* blk = nullptr;
    uint3 tid{};
    unsigned linear = 0, lane = 0, warp = 0, pos = 0;  // pos: index in the schedule order
    unsigned fullx = 0;                                 // full-warp exchanges done (buffer parity)
    FState st = RUNNABLE;
    const char* file = nullptr;  // call site of the __syncthreads or warp intrinsic it waits at
    int line = 0;
    const char* wwhat = nullptr;  // the warp intrinsic it waits in
    unsigned wmask = 0;  // mask it waits with (warp sync)
};
struct Warp {
    unsigned present = 0, arrived = 0, exited = 0;
    uint64_t xchg[32];      // exchange area for partial-mask collectives (2 syncs)
    uint64_t fxchg[2][32];  // double-buffered area for full-warp collectives (1 sync)
    std::vector<unsigned> releases;  // race check: masks of the warp barriers released in this barrier interval
};
// A shared-memory region of the running block: a static __shared__ array (registered at its first
// touch) or the dynamic shared memory.
struct Region {
    unsigned char* p;
    size_t n;
    size_t off;  // race check: offset of its bytes in the block's shadow / writer arrays
    const char* name;
    const char* file;  // declaration site (static arrays)
    int line;
};
// race check: the last plain (non-atomic) writer of a shared byte
struct Writer {
    unsigned interval;  // barrier interval of the write (stale: older than the block's current one)
    unsigned thread;    // linear thread index in the block
    unsigned epoch;     // releases of the writer's warp (Warp::releases.size()) when it was seen
};
// per launch, shared by its workers
struct LaunchState {
    std::atomic<unsigned> max_static{0}, opted_in{0}, smem_limit{0};
    void (*dyn_regions)(Block*) = nullptr;  // registers the kernel file's dynamic shared arrays
};
struct Block {
    uint3 bid{};
    dim3 bdim, gdim;
    unsigned nthreads = 0, live = 0, bar_arrived = 0;
    Fiber* fibers = nullptr;
    Warp* warps = nullptr;
    const unsigned* order = nullptr;  // schedule order (permutation of thread ids)
    void (*body)(void*) = nullptr;    // runs the kernel as the current CUDA thread
    void* body_arg = nullptr;
    size_t dyn_smem = 0;
    const cushim_launch_opts* opts = nullptr;
    LaunchState* launch = nullptr;
    // shared memory of this block: regions, static bytes, and the race detector's state
    std::vector<Region> regions;
    size_t static_bytes = 0;
    unsigned interval = 0;  // current barrier interval (race check; from a per-worker counter)
    bool race_reported = false;
    bool smem_pending = false;  // static arrays registered since the last limit check
#ifdef CUSHIM_UCONTEXT
    ucontext_t sched_uc;
#endif
    void* sched_sp = nullptr;
    std::string error;
};

inline thread_local Fiber* g_fiber = nullptr;
inline thread_local Block* g_block = nullptr;
inline thread_local std::vector<unsigned char> tl_shadow;  // race check: region bytes as of the last flush
inline thread_local std::vector<Writer> tl_writers;        // race check: per region byte, its last writer
inline thread_local unsigned tl_interval = 0;              // race check: barrier intervals on this worker
inline void (*g_touchers[64])();  // force TLS init of dynamic smem objects on each worker
inline std::atomic<int> g_ntouchers{0};
inline std::atomic<long> g_warnings{0};

inline size_t stack_size() {
    static size_t s = getenv("CUSHIM_STACK") ? strtoul(getenv("CUSHIM_STACK"), nullptr, 10) : 64 * 1024;
    return (s + 4095) & ~(size_t)4095;
}
inline void note(Block* b, const std::string& m) {
    if (b->opts->strict) {
        if (b->error.empty()) b->error = m;
        return;
    }
    if (g_warnings++ < 20)
        fprintf(stderr, "cushim warning: block (%u,%u,%u): %s\n", b->bid.x, b->bid.y, b->bid.z, m.c_str());
}

// ---- context switch
#ifndef CUSHIM_UCONTEXT
// x86-64 SysV: save the callee-saved registers on the stack, swap stack pointers. MXCSR and the
// x87 control word are not switched: CUDA code cannot change rounding modes.
extern "C" __attribute__((naked, noinline)) inline void cushim_switch(void** /*save*/, void* /*to*/) {
    asm volatile(
        "pushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n\t"
        "movq %rsp, (%rdi)\n\tmovq %rsi, %rsp\n\t"
        "popq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n\tret\n\t");
}
// first activation of a fiber lands here with r12 = Fiber*, r13 = entry function
extern "C" __attribute__((naked, noinline)) inline void cushim_trampoline() {
    asm volatile("andq $-16, %rsp\n\tmovq %r12, %rdi\n\tcallq *%r13\n\tud2\n\t");
}
inline void switch_fiber_to_fiber(Fiber* from, Fiber* to) { cushim_switch(&from->sp, to->sp); }
inline void switch_fiber_to_sched(Fiber* from, Block* b) { cushim_switch(&from->sp, b->sched_sp); }
inline void switch_sched_to_fiber(Block* b, Fiber* to) { cushim_switch(&b->sched_sp, to->sp); }
#else
inline void switch_fiber_to_fiber(Fiber* from, Fiber* to) { swapcontext(&from->uc, &to->uc); }
inline void switch_fiber_to_sched(Fiber* from, Block* b) { swapcontext(&from->uc, &b->sched_uc); }
inline void switch_sched_to_fiber(Block* b, Fiber* to) { swapcontext(&b->sched_uc, &to->uc); }
#endif

// abandon the block: record the error and go back to the scheduler for good
inline void fail(Block* b, const std::string& m) {
    if (b->error.empty()) b->error = m;
    switch_fiber_to_sched(g_fiber, b);
    __builtin_trap();
}
// switch straight to the next runnable fiber in schedule order; only when none is runnable go back
// to the scheduler (block finished, or deadlock)
inline void switch_to_next(Fiber* f) {
    Block* b = f->blk;
    unsigned n = b->nthreads;
    if (!b->error.empty()) {
        switch_fiber_to_sched(f, b);
        __builtin_trap();
    }
    for (unsigned k = 1; k <= n; k++) {
        unsigned p = f->pos + k;
        if (p >= n) p -= n;
        Fiber* o = &b->fibers[b->order[p]];
        if (o->st == RUNNABLE) {
            if (o == f) return;
            g_fiber = o;
            switch_fiber_to_fiber(f, o);
            return;
        }
    }
    switch_fiber_to_sched(f, b);
}

// ---- 3a. shared memory: regions, poisoning, limits
// Static + dynamic bytes a block may use without opting in, on every CUDA device.
constexpr size_t SMEM_DEFAULT_LIMIT = 48 * 1024;

// Checks the block's shared memory (its dynamic bytes and the static arrays registered so far)
// against the modelled device; on a violation records the error and the limit, returns false.
inline bool smem_within_limits(Block* b) {
    const cushim_launch_opts& o = *b->opts;
    const size_t st = b->static_bytes, dyn = b->dyn_smem;
    size_t limit = 0;
    std::string why;
    if (st > SMEM_DEFAULT_LIMIT) {
        limit = SMEM_DEFAULT_LIMIT;
        why = "static __shared__ arrays above 48 KiB (ptxas refuses them)";
    } else if (st + dyn > o.smem_optin_max) {
        limit = o.smem_optin_max;
        why = "more than the device's opt-in maximum of " + std::to_string(o.smem_optin_max) + " bytes per block";
    } else {
        // CUDA: without an opt-in a kernel's MAX_DYNAMIC_SHARED_SIZE_BYTES is 48 KiB minus its static size
        size_t max_dyn = o.smem_max_dynamic ? o.smem_max_dynamic : SMEM_DEFAULT_LIMIT - st;
        if (dyn > max_dyn && o.smem_auto_opt_in) {  // what the launch code does once it knows the static size
            b->launch->opted_in = 1;
            max_dyn = dyn;
        }
        if (dyn > max_dyn) {
            limit = st + max_dyn;
            why = o.smem_max_dynamic ? "more than the kernel's raised MAX_DYNAMIC_SHARED_SIZE_BYTES of " +
                                           std::to_string(o.smem_max_dynamic) + " dynamic bytes"
                                     : "more than 48 KiB without opting in (MAX_DYNAMIC_SHARED_SIZE_BYTES)";
        }
    }
    if (limit == 0) return true;
    unsigned none = 0;
    b->launch->smem_limit.compare_exchange_strong(none, (unsigned)limit);
    if (b->error.empty()) b->error = why;
    return false;
}
// Static arrays registered since the last check are checked at the fiber's next barrier, warp
// intrinsic or exit, so that the sizes in a message count every array declared before it.
inline void check_new_static_smem(Block* b) {
    if (!b->smem_pending) return;
    b->smem_pending = false;
    if (!smem_within_limits(b)) fail(b, b->error);
}

inline void add_region(Block* b, unsigned char* p, size_t n, const char* name, const char* file, int line) {
    memset(p, 0xff, n);  // poison: NaN as a float, -1 as an int
    size_t off = 0;
    if (b->opts->race_check) {
        off = tl_shadow.size();
        tl_shadow.insert(tl_shadow.end(), p, p + n);
        tl_writers.resize(off + n, Writer{0, 0, 0});  // interval 0: no writer yet
    }
    b->regions.push_back(Region{p, n, off, name, file, line});
}

// The file's dynamic shared array `p` for this block (the build script generates the call).
inline void add_dynamic_region(Block* b, void* p, const char* name) {
    add_region(b, static_cast<unsigned char*>(p), std::min<size_t>(b->dyn_smem, CUSHIM_DYN_SMEM_BYTES), name, nullptr, 0);
}

// After every static __shared__ declaration (inserted by the build script): the first touch of an
// array in a block poisons and registers it. Every fiber passes the declaration before it can
// write the array, so no write of this block is lost.
inline void touch_static_smem(const void* p, size_t n, const char* name, const char* file, int line) {
    Fiber* f = g_fiber;
    if (!f) return;
    Block* b = f->blk;
    for (const Region& r : b->regions)
        if (r.p == p) return;
    b->static_bytes += n;
    b->smem_pending = true;
    add_region(b, static_cast<unsigned char*>(const_cast<void*>(p)), n, name, file, line);
}

// ---- 3b. race detector (race_check): between two __syncthreads, a shared byte written by two
// different threads is an unsynchronised write-write conflict, unless the two threads are lanes of
// one warp and a warp barrier (a __syncwarp, shuffle or vote) over both lanes was released between
// the two writes. Fibers switch only at barriers and warp intrinsics, so at each of those the
// running fiber's writes since its previous one are found by comparing the block's shared regions
// with a shadow copy; atomics update the shadow themselves (they never conflict). Writes of the
// value a byte already holds are not seen, nor are races between a read and a write.
inline bool warp_ordered(const Block* b, const Writer& w, const Fiber* f) {
    if (w.thread / 32 != f->warp) return false;
    const std::vector<unsigned>& rel = b->warps[f->warp].releases;
    const unsigned both = (1u << (w.thread % 32)) | (1u << f->lane);
    for (size_t k = w.epoch; k < rel.size(); k++)
        if ((rel[k] & both) == both) return true;
    return false;
}
__attribute__((noinline)) inline void race_flush(Fiber* f, const char* what, const char* file, int line) {
    Block* b = f->blk;
    const unsigned epoch = (unsigned)b->warps[f->warp].releases.size();
    for (const Region& r : b->regions) {
        unsigned char* sh = tl_shadow.data() + r.off;
        if (memcmp(r.p, sh, r.n) == 0) continue;
        Writer* wr = tl_writers.data() + r.off;
        for (size_t i = 0; i < r.n; i += 64) {
            const size_t m = std::min<size_t>(64, r.n - i);
            if (memcmp(r.p + i, sh + i, m) == 0) continue;
            for (size_t j = i; j < i + m; j++) {
                if (r.p[j] == sh[j]) continue;
                Writer& w = wr[j];
                if (w.interval == b->interval && w.thread != f->linear && !warp_ordered(b, w, f) && !b->race_reported) {
                    b->race_reported = true;
                    std::string decl = r.file ? std::string(" (declared at ") + r.file + ":" + std::to_string(r.line) + ")" : "";
                    note(b, "shared-memory race: threads " + std::to_string(w.thread) + " and " + std::to_string(f->linear) +
                                " both wrote byte " + std::to_string(j) + " of `" + r.name + "`" + decl +
                                " between two __syncthreads with no atomic or warp barrier ordering them (thread " +
                                std::to_string(f->linear) + "'s write was found at its " + what + " at " + file + ":" +
                                std::to_string(line) + ")");
                }
                w = Writer{b->interval, f->linear, epoch};
                sh[j] = r.p[j];
            }
        }
    }
}
// An atomic on shared memory: keep the shadow in step so that the detector does not take it for a
// plain write.
inline void race_atomic(const void* p, size_t n) {
    Block* b = g_block;
    if (!b || !b->opts->race_check) return;
    const unsigned char* c = static_cast<const unsigned char*>(p);
    for (const Region& r : b->regions)
        if (c >= r.p && c + n <= r.p + r.n) {
            memcpy(tl_shadow.data() + r.off + (c - r.p), c, n);
            return;
        }
}
// a new barrier interval: no write before it conflicts with one after it
inline void next_interval(Block* b) {
    b->interval = ++tl_interval;
    if (b->opts->race_check)
        for (size_t w = 0; w < (b->nthreads + 31) / 32; w++) b->warps[w].releases.clear();
}

inline void fiber_main(Fiber* f) {
    Block* b = f->blk;
    b->body(b->body_arg);  // run the kernel body as this CUDA thread
    check_new_static_smem(b);
    if (b->opts->race_check) race_flush(f, "exit", "(kernel end)", 0);
    f->st = DONE;
    b->live--;
    Warp& w = b->warps[f->warp];
    w.exited |= 1u << f->lane;
    for (unsigned l = 0; l < 32; l++) {  // lanes already waiting for this one in a *_sync op
        if (!(w.present >> l & 1u)) continue;
        Fiber* o = &b->fibers[f->warp * 32 + l];
        if (o->st == WAIT_WARP && (o->wmask >> f->lane & 1u))
            fail(b, "thread " + std::to_string(f->linear) + " exited while lane " + std::to_string(l) +
                        " waits for it in a warp-synchronous op (UB in CUDA)");
    }
    if (b->bar_arrived > 0) {  // threads waiting at __syncthreads now need one less arrival
        note(b, "thread " + std::to_string(f->linear) + " exited while others wait at __syncthreads (UB in CUDA)");
        if (b->bar_arrived == b->live) {
            for (unsigned i = 0; i < b->nthreads; i++)
                if (b->fibers[i].st == WAIT_BAR) b->fibers[i].st = RUNNABLE;
            b->bar_arrived = 0;
            next_interval(b);
        }
    }
    switch_to_next(f);  // never resumed
    __builtin_trap();
}
#ifdef CUSHIM_UCONTEXT
inline void fiber_entry_uc(unsigned lo, unsigned hi) {
    fiber_main(reinterpret_cast<Fiber*>(((uintptr_t)hi << 32) | lo));
}
#endif
inline void fiber_init(Fiber* f) {
#ifndef CUSHIM_UCONTEXT
    uintptr_t top = (uintptr_t)(f->stack + stack_size()) & ~(uintptr_t)15;
    void** sp = (void**)(top - 128);
    sp[0] = nullptr;                     // r15
    sp[1] = nullptr;                     // r14
    sp[2] = (void*)&fiber_main;          // r13 = entry
    sp[3] = (void*)f;                    // r12 = arg
    sp[4] = nullptr;                     // rbx
    sp[5] = nullptr;                     // rbp
    sp[6] = (void*)&cushim_trampoline;   // return address (the trampoline realigns)
    f->sp = sp;
#else
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = stack_size();
    f->uc.uc_link = nullptr;
    uintptr_t p = (uintptr_t)f;
    makecontext(&f->uc, (void (*)())fiber_entry_uc, 2, (unsigned)(p & 0xffffffffu), (unsigned)(p >> 32));
#endif
}

// __syncthreads: every live thread of the block must arrive
__attribute__((noinline)) inline void syncthreads_impl(const char* file, int line) {
    Fiber* f = g_fiber;
    Block* b = f->blk;
    check_new_static_smem(b);
    if (b->opts->race_check) race_flush(f, "__syncthreads", file, line);
    f->st = WAIT_BAR;
    f->file = file;
    f->line = line;
    if (++b->bar_arrived == b->live) {  // the last arrival releases everybody and keeps running
        for (unsigned i = 0; i < b->nthreads; i++) {
            Fiber& o = b->fibers[i];
            if (o.st != WAIT_BAR) continue;
            if (o.line != line || (o.file != file && strcmp(o.file, file)))
                note(b, "__syncthreads reached from different call sites in one barrier: " + std::string(file) + ":" +
                            std::to_string(line) + " vs " + o.file + ":" + std::to_string(o.line));
            o.st = RUNNABLE;
        }
        b->bar_arrived = 0;
        next_interval(b);
        return;
    }
    switch_to_next(f);
}

inline bool same_site(const Fiber& a, const Fiber& b) {
    return a.line == b.line && (a.wwhat == b.wwhat || !strcmp(a.wwhat, b.wwhat)) &&
           (a.file == b.file || !strcmp(a.file, b.file));
}
// The lanes of a released warp barrier must have met at one call site of one intrinsic, except
// that __syncwarp may pair with __syncwarp anywhere (legal on sm_70+).
inline void check_warp_sites(Block* b, const Fiber* f, unsigned mask) {
    bool all_syncwarp = true;
    for (unsigned l = 0; l < 32; l++)
        if (mask >> l & 1u) all_syncwarp &= !strcmp(b->fibers[f->warp * 32 + l].wwhat, "__syncwarp");
    if (all_syncwarp) return;
    for (unsigned l = 0; l < 32; l++) {
        const Fiber& o = b->fibers[f->warp * 32 + l];
        if (!(mask >> l & 1u) || same_site(o, *f)) continue;
        note(b, "warp " + std::to_string(f->warp) + ": lanes of one mask met at different warp intrinsics: lane " +
                    std::to_string(o.lane) + " at " + o.wwhat + " " + o.file + ":" + std::to_string(o.line) + ", lane " +
                    std::to_string(f->lane) + " at " + f->wwhat + " " + f->file + ":" + std::to_string(f->line) +
                    " (every lane of the mask must execute the same shuffle/vote call)");
        return;
    }
}

// warp barrier over `mask`; all lanes in mask must call with the same mask (and, except for
// __syncwarp, from the same call site of the same intrinsic)
__attribute__((noinline)) inline void warp_sync_impl(unsigned mask, const char* what, const char* file, int line) {
    Fiber* f = g_fiber;
    Block* b = f->blk;
    Warp& w = b->warps[f->warp];
    check_new_static_smem(b);
    if (b->opts->race_check) race_flush(f, what, file, line);
    f->wwhat = what;
    f->file = file;
    f->line = line;
    if (!(mask >> f->lane & 1u)) note(b, std::string(what) + ": calling lane " + std::to_string(f->lane) + " not in mask");
    if (mask & ~w.present) {
        note(b, std::string(what) + ": mask names lanes that do not exist in this (partial) warp");
        mask &= w.present;
    }
    if (mask & w.exited) fail(b, std::string(what) + ": mask names lanes that already exited (UB in CUDA)");
    f->st = WAIT_WARP;
    f->wmask = mask;
    w.arrived |= 1u << f->lane;
    if ((w.arrived & mask) == mask) {
        bool same = true;
        for (unsigned l = 0; l < 32; l++)
            if (mask >> l & 1u) same &= (b->fibers[f->warp * 32 + l].wmask == mask);
        if (same) {
            check_warp_sites(b, f, mask);
            for (unsigned l = 0; l < 32; l++)
                if (mask >> l & 1u) b->fibers[f->warp * 32 + l].st = RUNNABLE;
            w.arrived &= ~mask;
            if (b->opts->race_check) w.releases.push_back(mask);
            f->st = RUNNABLE;  // the releasing lane keeps running without a switch
            return;
        }
    }
    switch_to_next(f);
}

inline std::vector<unsigned> schedule_order(unsigned n, unsigned block_linear, const cushim_launch_opts& o) {
    std::vector<unsigned> v(n);
    for (unsigned i = 0; i < n; i++) v[i] = i;
    if (o.order == 1) {
        std::reverse(v.begin(), v.end());
    } else if (o.order == 2) {
        std::mt19937 rng(o.seed * 7919u + block_linear);
        std::shuffle(v.begin(), v.end(), rng);
    }
    return v;
}

// run one block to completion on the calling OS thread
inline void run_block(Block& b, char* stacks) {
    unsigned n = b.nthreads;
    std::vector<Fiber> fibers(n);
    std::vector<Warp> warps((n + 31) / 32);
    b.fibers = fibers.data();
    b.warps = warps.data();
    b.live = n;
    b.bar_arrived = 0;
    for (unsigned i = 0; i < n; i++) {
        Fiber& f = fibers[i];
        f.blk = &b;
        f.linear = i;
        f.lane = i % 32;
        f.warp = i / 32;
        f.tid = {i % b.bdim.x, (i / b.bdim.x) % b.bdim.y, i / (b.bdim.x * b.bdim.y)};
        f.stack = stacks + (size_t)i * (stack_size() + 4096) + 4096;  // guard page below
        warps[f.warp].present |= 1u << f.lane;
        fiber_init(&f);
    }
    auto order = schedule_order(n, b.bid.x + b.bid.y * b.gdim.x + b.bid.z * b.gdim.x * b.gdim.y, *b.opts);
    for (unsigned k = 0; k < n; k++) fibers[order[k]].pos = k;
    b.order = order.data();
    b.regions.clear();
    b.static_bytes = 0;
    b.smem_pending = false;
    tl_shadow.clear();
    tl_writers.clear();
    b.interval = ++tl_interval;
    if (!smem_within_limits(&b)) return;  // the dynamic size alone is too large: no thread runs
    if (b.dyn_smem > 0 && b.launch->dyn_regions) b.launch->dyn_regions(&b);  // poisoned for every block
    g_block = &b;
    while (b.live > 0 && b.error.empty()) {
        bool progressed = false;
        for (unsigned k = 0; k < n; k++) {
            Fiber& f = fibers[order[k]];
            if (f.st != RUNNABLE) continue;
            g_fiber = &f;
            switch_sched_to_fiber(&b, &f);  // fibers chain among themselves; back here when none runnable
            progressed = true;
            break;
        }
        if (!progressed) {
            std::string m = "deadlock: " + std::to_string(b.live) + " live threads, none runnable;";
            for (unsigned i = 0, shown = 0; i < n && shown < 4; i++) {
                Fiber& f = fibers[i];
                if (f.st == DONE) continue;
                shown++;
                m += " t" + std::to_string(i);
                if (f.st == WAIT_BAR) {
                    m += " at __syncthreads " + std::string(f.file) + ":" + std::to_string(f.line);
                } else {
                    char h[16];
                    snprintf(h, sizeof h, "%08x", f.wmask);
                    m += std::string(" at ") + f.wwhat + " " + f.file + ":" + std::to_string(f.line) + ", mask=0x" + h;
                }
                m += ";";
            }
            b.error = m;
        }
    }
    g_fiber = nullptr;
    g_block = nullptr;
}

// ---- crash reporting: name the CUDA thread on SIGSEGV/SIGBUS/SIGFPE, then chain to the previous
// handler (Rust's own stack-overflow handler, for instance).
inline struct sigaction g_old_segv, g_old_bus, g_old_fpe;
inline void crash_handler(int sig, siginfo_t* info, void* ctx) {
    if (g_fiber) {
        char buf[240];
        int n = snprintf(buf, sizeof buf,
                         "cushim: %s in blockIdx=(%u,%u,%u) threadIdx=(%u,%u,%u) (a bad pointer, or a fiber stack "
                         "overflow: raise CUSHIM_STACK)\n",
                         sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : "SIGFPE", g_block->bid.x,
                         g_block->bid.y, g_block->bid.z, g_fiber->tid.x, g_fiber->tid.y, g_fiber->tid.z);
        if (write(2, buf, n) < 0) {
        }
    }
    struct sigaction* old = sig == SIGSEGV ? &g_old_segv : sig == SIGBUS ? &g_old_bus : &g_old_fpe;
    if (old->sa_flags & SA_SIGINFO) {
        old->sa_sigaction(sig, info, ctx);
    } else if (old->sa_handler != SIG_IGN && old->sa_handler != SIG_DFL) {
        old->sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);
        raise(sig);
    }
}
inline void install_crash_reporting() {
    static thread_local std::vector<char> altstack;
    if (altstack.empty()) {
        altstack.resize(64 * 1024);
        stack_t ss{};
        ss.ss_sp = altstack.data();
        ss.ss_size = altstack.size();
        sigaltstack(&ss, nullptr);
    }
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa{};
        sa.sa_sigaction = crash_handler;
        sa.sa_flags = SA_ONSTACK | SA_SIGINFO;
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
        sigaction(SIGFPE, &sa, &g_old_fpe);
    });
}

// ---- fiber stacks: one arena per worker, reused across launches (mmap + guard pages are costly)
struct StackArena {
    char* base;
    size_t len;
    unsigned threads;
};
inline std::mutex g_arena_mu;
inline std::vector<StackArena> g_arenas;
inline bool take_arena(unsigned nt, StackArena* out) {
    std::lock_guard<std::mutex> g(g_arena_mu);
    for (size_t i = 0; i < g_arenas.size(); i++) {
        if (g_arenas[i].threads >= nt) {
            *out = g_arenas[i];
            g_arenas.erase(g_arenas.begin() + i);
            return true;
        }
    }
    size_t per = stack_size() + 4096, len = per * 1024;  // always room for the largest block
    char* st = (char*)mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (st == MAP_FAILED) return false;
    for (unsigned i = 0; i < 1024; i++) mprotect(st + i * per, 4096, PROT_NONE);  // stack guard pages
    *out = {st, len, 1024};
    return true;
}
inline void give_arena(const StackArena& a) {
    std::lock_guard<std::mutex> g(g_arena_mu);
    g_arenas.push_back(a);
}

struct LaunchResult {
    bool ok;
    std::string error;
};

// Runs a launch; writes the opts' outputs (static shared bytes, opt-in, the shared-memory limit passed).
inline LaunchResult launch_fn(dim3 grid, dim3 block, size_t dyn_smem, cushim_launch_opts& opts,
                              void (*dyn_regions)(Block*), void (*body)(void*), void* body_arg) {
    opts.out_static_smem = opts.out_opted_in = opts.out_smem_limit = 0;
    unsigned long nt = (unsigned long)block.x * block.y * block.z;
    if (nt == 0 || nt > 1024) return {false, "invalid block size " + std::to_string(nt) + " (1..1024 threads)"};
    if (dyn_smem > CUSHIM_DYN_SMEM_BYTES) {  // the shim's buffers (the limits above are lower)
        opts.out_smem_limit = CUSHIM_DYN_SMEM_BYTES;
        return {false, std::to_string(dyn_smem) + " bytes of dynamic shared memory: more than any CUDA device has"};
    }
    LaunchState state;
    state.dyn_regions = dyn_regions;
    unsigned long nb = (unsigned long)grid.x * grid.y * grid.z;
    if (nb == 0) return {false, "empty grid"};
    unsigned nw = opts.workers;
    if (nw == 0) {
        nw = std::thread::hardware_concurrency();
        if (const char* e = getenv("CUSHIM_WORKERS")) nw = (unsigned)atoi(e);
    }
    nw = std::max(1u, (unsigned)std::min<unsigned long>(nw, nb));
    std::atomic<unsigned long> next{0};
    std::vector<std::string> errs(nw);
    auto worker = [&](unsigned wi) {
        install_crash_reporting();
        for (int i = 0; i < std::min(64, g_ntouchers.load()); i++) g_touchers[i]();
        StackArena arena;
        if (!take_arena((unsigned)nt, &arena)) {
            errs[wi] = "mmap of fiber stacks failed";
            next = nb;
            return;
        }
        for (unsigned long bl; (bl = next.fetch_add(1)) < nb;) {
            Block b;
            b.bid = {unsigned(bl % grid.x), unsigned((bl / grid.x) % grid.y),
                     unsigned(bl / ((unsigned long)grid.x * grid.y))};
            b.bdim = block;
            b.gdim = grid;
            b.nthreads = (unsigned)nt;
            b.body = body;
            b.body_arg = body_arg;
            b.dyn_smem = dyn_smem;
            b.opts = &opts;
            b.launch = &state;
            run_block(b, arena.base);
            for (unsigned m = state.max_static; b.static_bytes > m && !state.max_static.compare_exchange_weak(m, (unsigned)b.static_bytes);) {
            }
            if (!b.error.empty()) {
                errs[wi] = "block (" + std::to_string(b.bid.x) + "," + std::to_string(b.bid.y) + "," +
                           std::to_string(b.bid.z) + "): " + b.error;
                next = nb;
                break;
            }
        }
        give_arena(arena);
    };
    std::vector<std::thread> th;
    for (unsigned i = 1; i < nw; i++) th.emplace_back(worker, i);
    worker(0);
    for (auto& t : th) t.join();
    opts.out_static_smem = state.max_static;
    opts.out_opted_in = state.opted_in;
    opts.out_smem_limit = state.smem_limit;
    for (auto& e : errs)
        if (!e.empty()) return {false, e};
    return {true, ""};
}

// cuLaunchKernel-style: params[i] points at the i-th argument (what cudarc and our Rust launch code build)
template <class... P, size_t... I>
LaunchResult launch_packed_impl(void (*k)(P...), dim3 g, dim3 b, size_t s, void** p, cushim_launch_opts& o,
                                void (*dyn_regions)(Block*), std::index_sequence<I...>) {
    std::tuple<std::decay_t<P>...> args(*static_cast<std::decay_t<P>*>(p[I])...);  // copied, as the driver does
    struct Ctx {
        void (*k)(P...);
        std::tuple<std::decay_t<P>...>* args;
    } ctx{k, &args};
    return launch_fn(g, b, s, o, dyn_regions, [](void* c) {
        auto* x = static_cast<Ctx*>(c);
        std::apply(x->k, *x->args);
    }, &ctx);
}
template <class... P>
LaunchResult launch_packed(void (*k)(P...), dim3 g, dim3 b, size_t s, void** p, cushim_launch_opts& o,
                           void (*dyn_regions)(Block*)) {
    return launch_packed_impl(k, g, b, s, p, o, dyn_regions, std::index_sequence_for<P...>{});
}
}  // namespace cushim

// C ABI export for the Rust Emu backend: CUSHIM_EXPORT(kernel) defines
//   int cushim_launch_<kernel>(const unsigned grid[3], const unsigned block[3], size_t smem,
//                              void** params, cushim_launch_opts* opts, char* err, size_t errlen)
// returning 0 on success, 1 with a message in err on failure (opts' outputs are written either way).
// The translation unit defines `cushim_tu_dyn_smem` (the build script generates it): it registers
// the file's dynamic shared arrays with a block.
#define CUSHIM_EXPORT(k)                                                                                  \
    extern "C" int cushim_launch_##k(const unsigned* g, const unsigned* bl, size_t smem, void** p,        \
                                     cushim_launch_opts* o, char* err, size_t errlen) {                   \
        auto r = ::cushim::launch_packed(&k, dim3(g[0], g[1], g[2]), dim3(bl[0], bl[1], bl[2]), smem, p, \
                                         *o, &cushim_tu_dyn_smem);                                        \
        if (!r.ok && err && errlen) snprintf(err, errlen, "%s", r.error.c_str());                         \
        return r.ok ? 0 : 1;                                                                              \
    }

// ---- 4. built-in variables and intrinsics
#define threadIdx (::cushim::g_fiber->tid)
#define blockIdx (::cushim::g_block->bid)
#define blockDim (::cushim::g_block->bdim)
#define gridDim (::cushim::g_block->gdim)
#define warpSize 32
#define __syncthreads() ::cushim::syncthreads_impl(__FILE__, __LINE__)
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::cushim::warp_sync_impl(mask, "__syncwarp", file, line);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

namespace cushim {
enum ShflMode { IDX, UP, DOWN, BFLY };
// PTX shfl.sync semantics; c = ((32-width)<<8) | clamp
template <class T>
T shfl(ShflMode mode, unsigned mask, T v, int b, int width, const char* what, const char* file, int line) {
    static_assert(sizeof(T) <= 8, "shfl of types > 8 bytes");
    Fiber* f = g_fiber;
    Warp& w = f->blk->warps[f->warp];
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    // full 32-lane warp & full mask: double-buffered slots, one barrier per shuffle. A lane can
    // only overwrite buffer p again two exchanges later, i.e. after every lane passed the barrier
    // of the next exchange, i.e. after every lane has read buffer p.
    const bool full = mask == 0xffffffffu && w.present == 0xffffffffu && w.exited == 0;
    uint64_t* slots = full ? w.fxchg[f->fullx++ & 1] : w.xchg;
    slots[f->lane] = bits;
    warp_sync_impl(mask, what, file, line);  // all values written
    unsigned lane = f->lane, segmask = (32u - (unsigned)width) & 31u;
    unsigned clamp = mode == UP ? 0u : 31u;
    unsigned maxLane = (lane & segmask) | (clamp & ~segmask), minLane = lane & segmask;
    int j;
    bool ok;
    switch (mode) {
        case UP: j = (int)lane - b; ok = j >= (int)maxLane; break;
        case DOWN: j = (int)lane + b; ok = j <= (int)maxLane; break;
        case BFLY: j = (int)(lane ^ (unsigned)b); ok = j <= (int)maxLane; break;
        default: j = (int)(minLane | ((unsigned)b & ~segmask & 31u)); ok = j <= (int)maxLane; break;
    }
    if (!ok) j = (int)lane;
    if (!(mask >> j & 1u)) note(f->blk, std::string(what) + ": source lane " + std::to_string(j) + " not in mask (undefined value)");
    T r;
    std::memcpy(&r, &slots[j], sizeof(T));
    if (!full) warp_sync_impl(mask, what, file, line);  // all values read before reuse
    return r;
}
inline unsigned vote(unsigned mask, bool p, const char* what, const char* file, int line) {
    Fiber* f = g_fiber;
    Warp& w = f->blk->warps[f->warp];
    w.xchg[f->lane] = p;
    warp_sync_impl(mask, what, file, line);
    unsigned r = 0;
    for (unsigned l = 0; l < 32; l++)
        if ((mask >> l & 1u) && w.xchg[l]) r |= 1u << l;
    warp_sync_impl(mask, what, file, line);
    return r;
}
}  // namespace cushim
// (the call site, for the check that all lanes of a mask meet at the same call)
#define CUSHIM_SITE const char* file = __builtin_FILE(), int line = __builtin_LINE()
template <class T> T __shfl_sync(unsigned m, T v, int src, int width = 32, CUSHIM_SITE) { return cushim::shfl(cushim::IDX, m, v, src, width, "__shfl_sync", file, line); }
template <class T> T __shfl_up_sync(unsigned m, T v, unsigned d, int width = 32, CUSHIM_SITE) { return cushim::shfl(cushim::UP, m, v, (int)d, width, "__shfl_up_sync", file, line); }
template <class T> T __shfl_down_sync(unsigned m, T v, unsigned d, int width = 32, CUSHIM_SITE) { return cushim::shfl(cushim::DOWN, m, v, (int)d, width, "__shfl_down_sync", file, line); }
template <class T> T __shfl_xor_sync(unsigned m, T v, int lm, int width = 32, CUSHIM_SITE) { return cushim::shfl(cushim::BFLY, m, v, lm, width, "__shfl_xor_sync", file, line); }
inline unsigned __ballot_sync(unsigned m, int p, CUSHIM_SITE) { return cushim::vote(m, p != 0, "__ballot_sync", file, line); }
inline int __any_sync(unsigned m, int p, CUSHIM_SITE) { return cushim::vote(m, p != 0, "__any_sync", file, line) != 0; }
inline int __all_sync(unsigned m, int p, CUSHIM_SITE) {
    auto* f = cushim::g_fiber;
    auto& w = f->blk->warps[f->warp];
    return cushim::vote(m, p != 0, "__all_sync", file, line) == (m & w.present & ~w.exited);
}
#undef CUSHIM_SITE
inline unsigned __activemask() {
    auto* f = cushim::g_fiber;
    auto& w = f->blk->warps[f->warp];
    return w.present & ~w.exited;
}

// ---- 5. math / bit intrinsics (host libm; the GPU's approximate paths differ in the last bits)
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
// the product rounded once, never fused into an add (the build passes -ffp-contract=off as well)
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T> inline T __ldg(const T* p) { return *p; }
using std::max;
using std::min;
inline float max(float a, float b) { return std::fmax(a, b); }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline float fminf(float a, float b) { return std::fmin(a, b); }

// ---- 6. atomics (real atomics: blocks run concurrently on worker threads). Each tells the race
// detector about its write (an atomic never races).
template <class T, class Op> inline T cushim_atomic_rmw(T* p, T v, Op op) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED), nv;
    do { nv = op(old, v); } while (!__atomic_compare_exchange(p, &old, &nv, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    cushim::race_atomic(p, sizeof(T));
    return old;
}
template <class T> inline T cushim_atomic_seen(T* p, T old) {
    cushim::race_atomic(p, sizeof(T));
    return old;
}
inline int atomicAdd(int* p, int v) { return cushim_atomic_seen(p, __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST)); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return cushim_atomic_seen(p, __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST)); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return cushim_atomic_seen(p, __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST)); }
inline float atomicAdd(float* p, float v) {
    uint32_t* u = reinterpret_cast<uint32_t*>(p);
    uint32_t old = __atomic_load_n(u, __ATOMIC_RELAXED), nv;
    do { nv = __float_as_uint(__uint_as_float(old) + v); } while (!__atomic_compare_exchange_n(u, &old, nv, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    cushim::race_atomic(p, sizeof(float));
    return __uint_as_float(old);
}
inline int atomicMax(int* p, int v) { return cushim_atomic_rmw<int>(p, v, [](int a, int b) { return a > b ? a : b; }); }
inline int atomicMin(int* p, int v) { return cushim_atomic_rmw<int>(p, v, [](int a, int b) { return a < b ? a : b; }); }
inline unsigned atomicMax(unsigned* p, unsigned v) { return cushim_atomic_rmw<unsigned>(p, v, [](unsigned a, unsigned b) { return a > b ? a : b; }); }
inline int atomicExch(int* p, int v) { return cushim_atomic_seen(p, __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST)); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return cushim_atomic_seen(p, __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST)); }
inline int atomicCAS(int* p, int cmp, int v) { __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); return cushim_atomic_seen(p, cmp); }
inline unsigned atomicCAS(unsigned* p, unsigned cmp, unsigned v) { __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); return cushim_atomic_seen(p, cmp); }

// ---- 7. dynamic shared memory registration (see cushim_dyn_smem.h)
extern "C" __attribute__((weak)) void cushim_register_dyn_smem(unsigned char* p, unsigned long n) {
    memset(p, 0xff, n);  // runs on the worker (see touchers) before any fiber; every block poisons it again
}
extern "C" __attribute__((weak)) int cushim_register_dyn_toucher(void (*touch)()) {
    int i = cushim::g_ntouchers.fetch_add(1);
    if (i < 64) cushim::g_touchers[i] = touch;
    return i;
}
