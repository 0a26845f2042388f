// faults.cu -- deliberately broken kernels. They compile (NVRTC would accept them too) and a GPU
// often runs them "correctly" by luck. They exist only to prove that the Emu test harness catches
// such bugs; the build compiles them for Emu alone, never for the GPU.
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
