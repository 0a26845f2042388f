// Dynamic shared memory for cushim: `extern __shared__ T name[];` in a kernel becomes
// `extern thread_local T name[];`. The build script defines each such name ONCE, in a translation
// unit that does not include the kernels (types differ on purpose; variables are not type-mangled):
//     #include "cushim_dyn_smem.h"
//     CUSHIM_DEFINE_DYNAMIC_SHARED(smem)
// The user-provided constructor (a) forces a TLS init function _ZTH<name>, which GCC's TLS wrapper
// in the kernel TU calls unconditionally (without one: a call to address 0), and (b) registers the
// buffer (poisoned to 0xFF bytes: NaN / -1; every block poisons its dynamic bytes again). The static
// "toucher" lets each worker thread initialise the TLS object before any fiber runs.
#pragma once
// Bytes of each dynamic shared array: what the largest CUDA device (sm_90, 227 KiB) allows; the
// launch limits the shim models are lower.
#define CUSHIM_DYN_SMEM_BYTES (227 * 1024)
extern "C" void cushim_register_dyn_smem(unsigned char* p, unsigned long n);
extern "C" int cushim_register_dyn_toucher(void (*touch)());
struct cushim_dyn_smem_t {
    alignas(16) unsigned char bytes[CUSHIM_DYN_SMEM_BYTES];
    cushim_dyn_smem_t() { cushim_register_dyn_smem(bytes, sizeof bytes); }
};
#define CUSHIM_DEFINE_DYNAMIC_SHARED(name)             \
    thread_local cushim_dyn_smem_t name;               \
    static void cushim_touch_##name() { (void)&name; } \
    static int cushim_reg_##name = cushim_register_dyn_toucher(cushim_touch_##name);
