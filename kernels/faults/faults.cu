// faults.cu -- deliberately broken kernels, and correct twins of some (the controls). They compile
// and a GPU often runs them "correctly" by luck. They exist only to prove that the Emu test harness
// catches such bugs (crates/tts-kernels/tests/harness_catches_faults.rs); the build compiles them
// for Emu alone, never for the GPU.
#include "../common.cuh"

struct FaultParams {
    const float* x;  // [n]
    float* y;        // [n]
    unsigned n;
    unsigned pad_;
};
static_assert(sizeof(FaultParams) == 24, "FaultParams must match its Rust mirror");


// Missing __syncthreads between the shared-memory write and the neighbour's read.
extern "C" __global__ void fault_missing_barrier(const FaultParams p) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = i < p.n ? p.x[i] : 0.0f;
    // BUG: __syncthreads() belongs here
    if (i < p.n) p.y[i] = t + 1 < blockDim.x ? s[t + 1] : 0.0f;
}

// The same kernel, correct: the control for the test above.
extern "C" __global__ void fault_fixed_barrier(const FaultParams p) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = i < p.n ? p.x[i] : 0.0f;
    __syncthreads();
    if (i < p.n) p.y[i] = t + 1 < blockDim.x ? s[t + 1] : 0.0f;
}

// Off by one: reads x[n] past the end of the input.
extern "C" __global__ void fault_read_past_end(const FaultParams p) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n) p.y[i] = p.x[i] + p.x[i + 1];
}

// Off by one: writes y[n] past the end of the output.
extern "C" __global__ void fault_write_past_end(const FaultParams p) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= p.n) p.y[i] = p.x[i < p.n ? i : 0];
}

// __syncthreads inside a branch that only some threads take.
extern "C" __global__ void fault_divergent_barrier(const FaultParams p) {
    if (threadIdx.x < 16) {
        __syncthreads();
        p.y[threadIdx.x] = 1.0f;
    }
}

// Reads dynamic shared memory that only block 0 writes: every other block must see the poison
// (NaN), even when it runs on the worker that ran block 0.
extern "C" __global__ void fault_stale_dynamic_smem(const FaultParams p) {
    extern __shared__ float dyn[];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    if (blockIdx.x == 0) dyn[t] = 1.0f;
    __syncthreads();
    if (i < p.n) p.y[i] = dyn[t];
}

// Reads a static shared array that only block 0 writes: every other block must see the poison
// (NaN), even when it runs on the worker that ran block 0 (static __shared__ is thread_local there).
extern "C" __global__ void fault_stale_static_smem(const FaultParams p) {
    __shared__ float st[256];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    if (blockIdx.x == 0) st[t] = 1.0f;
    __syncthreads();
    if (i < p.n) p.y[i] = st[t];
}

// The control: every block writes the static array before reading it.
extern "C" __global__ void fault_fresh_static_smem(const FaultParams p) {
    __shared__ float st[256];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    st[t] = (float)blockIdx.x;
    __syncthreads();
    if (i < p.n) p.y[i] = st[t];
}

// Every thread adds its element to one shared sum with a plain read-modify-write between two
// barriers: updates are lost on a GPU, but every Emu schedule gets the right sum (fibers never
// switch inside `+=`). y[block] = the block's sum.
extern "C" __global__ void fault_smem_rmw_race(const FaultParams p) {
    __shared__ float sum;
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    if (t == 0) sum = 0.0f;
    __syncthreads();
    sum += i < p.n ? p.x[i] : 0.0f;  // BUG: needs atomicAdd (or a reduction)
    __syncthreads();
    if (t == 0) p.y[blockIdx.x] = sum;
}

// The control: the same sum with atomicAdd.
extern "C" __global__ void fault_smem_atomic_sum(const FaultParams p) {
    __shared__ float sum;
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    if (t == 0) sum = 0.0f;
    __syncthreads();
    atomicAdd(&sum, i < p.n ? p.x[i] : 0.0f);
    __syncthreads();
    if (t == 0) p.y[blockIdx.x] = sum;
}

// Correct: lanes 0 and 1 of each warp write the warp's word one after the other, ordered by
// __syncwarp. y[warp] = 2.
extern "C" __global__ void fault_warp_ordered_writes(const FaultParams p) {
    __shared__ float per_warp[32];
    const unsigned t = threadIdx.x, lane = t & 31u, w = t >> 5;
    if (lane == 0) per_warp[w] = 1.0f;
    __syncwarp();
    if (lane == 1) per_warp[w] += 1.0f;
    __syncthreads();
    const unsigned o = blockIdx.x * (blockDim.x / 32u) + w;
    if (lane == 0 && o < p.n) p.y[o] = per_warp[w];
}

// Threads 0 and 32 (two warps) write one word with only a __syncwarp between them, which orders
// nothing across warps. y[block] = the word.
extern "C" __global__ void fault_cross_warp_writes(const FaultParams p) {
    __shared__ float word;
    const unsigned t = threadIdx.x;
    if (t == 0) word = 1.0f;
    __syncwarp();
    if (t == 32) word = 2.0f;  // BUG: needs __syncthreads before it
    __syncthreads();
    if (t == 0 && blockIdx.x < p.n) p.y[blockIdx.x] = word;
}

// Lanes 0-15 and 16-31 reach the same full-mask shuffle from two call sites: y[i] = x[i ^ 16].
extern "C" __global__ void fault_divergent_shuffle(const FaultParams p) {
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    const float v = i < p.n ? p.x[i] : 0.0f;
    float r;
    if ((t & 31u) < 16u) {
        r = __shfl_xor_sync(0xffffffffu, v, 16);
    } else {
        r = __shfl_xor_sync(0xffffffffu, v, 16);  // BUG: the lanes of one mask must meet at one call
    }
    if (i < p.n) p.y[i] = r;
}

// The control: one call site.
extern "C" __global__ void fault_converged_shuffle(const FaultParams p) {
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    const float v = i < p.n ? p.x[i] : 0.0f;
    const float r = __shfl_xor_sync(0xffffffffu, v, 16);
    if (i < p.n) p.y[i] = r;
}

// Lanes 0-15 vote with __ballot_sync, lanes 16-31 with __any_sync, over the same full mask.
extern "C" __global__ void fault_divergent_ballot(const FaultParams p) {
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    const bool pos = i < p.n && p.x[i] > 0.0f;
    unsigned b;
    if ((t & 31u) < 16u) {
        b = __ballot_sync(0xffffffffu, pos);
    } else {
        b = __any_sync(0xffffffffu, pos) ? 1u : 0u;  // BUG: another intrinsic for the same mask
    }
    if (i < p.n) p.y[i] = (float)__popc(b);
}

// Correct on sm_70+: __syncwarp from two call sites. y[i] = x[i].
extern "C" __global__ void fault_divergent_syncwarp(const FaultParams p) {
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    if ((t & 31u) < 16u) {
        __syncwarp();
    } else {
        __syncwarp();
    }
    if (i < p.n) p.y[i] = p.x[i];
}

// 40 KiB of static shared memory plus the launch's dynamic bytes: above 48 KiB only with an
// opt-in. y[i] = t + 1 (read back through the dynamic array).
#define FAULT_BIG_STATIC 10240
extern "C" __global__ void fault_big_static_smem(const FaultParams p) {
    __shared__ float big[FAULT_BIG_STATIC];
    extern __shared__ float dyn[];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    for (unsigned k = t; k < FAULT_BIG_STATIC; k += blockDim.x) big[k] = (float)k;
    __syncthreads();
    dyn[t] = big[t] + 1.0f;
    __syncthreads();
    if (i < p.n) p.y[i] = dyn[t];
}

// More static shared memory than a kernel may declare (48 KiB; ptxas refuses it for a GPU).
extern "C" __global__ void fault_static_smem_too_big(const FaultParams p) {
    __shared__ float huge[12289];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    huge[t] = 0.0f;
    if (i < p.n) p.y[i] = huge[t];
}
