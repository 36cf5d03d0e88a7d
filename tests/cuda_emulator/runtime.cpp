// The emulator runtime: runs a CUDA launch on the host, every thread of a
// block as a fiber, blocks one after another.
//
// Semantics kept from the hardware:
// - __syncthreads: every thread of the block waits at the same barrier; a
//   thread that waits at another one, or exits while others wait, is a
//   divergent barrier and fails the launch (the hardware would hang or
//   misbehave);
// - __syncwarp and __shfl_xor_sync: every lane of the mask reaches the same
//   call (strict: the same source line), with the same mask; a lane that
//   exits or waits elsewhere fails the launch;
// - a launch where no thread can move is a deadlock and fails, never hangs.
//
// What it adds: with the kernel file built with memory-access hooks
// (-fsanitize=thread instrumentation, resolved here instead of by the
// ThreadSanitizer runtime), every load and store is checked: it must lie in a
// buffer passed to the launch, in shared memory or on the thread's own stack,
// and be aligned to its size. Global traffic is counted per buffer in 32-byte
// sectors per warp access, and shared memory is checked for reads of words not
// written in this block and for accesses of two threads to one word with no
// barrier between them.
//
// The same file builds under AddressSanitizer and ThreadSanitizer: fiber
// switches are announced to them, and under ThreadSanitizer each barrier or
// shuffle is a release/acquire pair, so that a missing barrier is a race.

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include <link.h>

// The build defines at most one of these. The runtime itself is never
// instrumented: its bookkeeping is not kernel memory traffic, and fibers and
// the scheduler touch it with no ordering that ThreadSanitizer could see.
#if FL_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#if FL_EMU_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

struct uint3 {
    unsigned int x, y, z;
};

namespace {

typedef unsigned long long u64;

// --- fibers ------------------------------------------------------------------------------

#if defined(__x86_64__)
}  // namespace
// Saves the callee-saved registers on the current stack, stores the stack
// pointer in *save and continues on `next` (popping what its own switch
// pushed). A new fiber's stack is laid out as if it had switched away at the
// start of fl_emu_fiber_start.
extern "C" __attribute__((visibility("hidden"))) void fl_emu_switch(void** save, void* next);
extern "C" __attribute__((visibility("hidden"))) void fl_emu_fiber_start();
asm(R"(
    .text
    .p2align 4
    .hidden fl_emu_switch
    .globl fl_emu_switch
    .type fl_emu_switch, @function
fl_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size fl_emu_switch, .-fl_emu_switch

    .p2align 4
    .hidden fl_emu_fiber_start
    .globl fl_emu_fiber_start
    .type fl_emu_fiber_start, @function
fl_emu_fiber_start:
    call fl_emu_fiber_main
    ud2
    .size fl_emu_fiber_start, .-fl_emu_fiber_start
)");
namespace {

struct Context {
    void* sp = nullptr;
};
#else
struct Context {
    ucontext_t uc;
};
#endif

enum class Wait { none, block_barrier, warp_sync, shuffle, done };

struct Access {
    u64 pc;
    int buffer;
    bool write;
    u64 first_sector;
    u64 last_sector;
};

struct Fiber {
    Context context;
    char* stack = nullptr;
    size_t stack_size = 0;
#if FL_EMU_ASAN
    void* fake_stack = nullptr;
#endif
#if FL_EMU_TSAN
    void* tsan_fiber = nullptr;
#endif
    uint3 index{0, 0, 0};
    int linear = 0;
    Wait wait = Wait::none;
    const char* file = nullptr;
    int line = 0;
    unsigned int mask = 0;
    int lane_mask = 0;
    int width = 32;
    u64 value = 0;
    u64 result = 0;
    std::vector<Access> accesses;  // since the warp's last synchronisation
};

struct Buffer {
    u64 begin;
    u64 end;
    u64 counts[4];  // bytes loaded and stored by instructions; sector bytes read and written
};

struct SharedWord {
    u64 block = 0;         // launch-wide block serial of the last write; 0: unwritten
    int writer = -1;
    u64 writer_block_epoch = 0;
    u64 writer_warp_epoch = 0;
    int reader = -1;       // -2: several
    u64 reader_block_epoch = 0;
    u64 reader_warp_epoch = 0;
};

typedef void (*Trampoline)(void**);

struct State {
    Trampoline entry = nullptr;
    void** args = nullptr;
    uint3 grid{1, 1, 1};
    uint3 block{1, 1, 1};
    uint3 block_index{0, 0, 0};
    u64 block_serial = 0;
    int threads = 0;
    std::vector<Fiber> fibers;
    Fiber* current = nullptr;
    Context scheduler;
#if FL_EMU_ASAN
    void* scheduler_fake_stack = nullptr;
    const void* scheduler_stack_bottom = nullptr;
    size_t scheduler_stack_size = 0;
#endif
#if FL_EMU_TSAN
    void* scheduler_tsan = nullptr;
    char launch_begin = 0;
    char launch_end = 0;
    char block_sync = 0;
    std::vector<char> warp_sync;
#endif
    bool failed = false;
    std::string error;
    // memory checks and counting (hooked builds)
    bool active = false;
    bool count = false;
    std::vector<Buffer> buffers;
    u64 shared_begin = 0;
    u64 shared_end = 0;
    u64 accesses = 0;
    u64 access_limit = 0;
    u64 block_epoch = 0;
    std::vector<u64> warp_epoch;
    std::unordered_map<u64, SharedWord> shared_words;
};

State S;
const size_t kStackSize = 64 * 1024;

void fail(const char* format, ...) __attribute__((format(printf, 1, 2)));

void switch_to(Context& from, Context& to, Fiber* target) {
#if FL_EMU_ASAN
    void** save = S.current ? &S.current->fake_stack : &S.scheduler_fake_stack;
    const void* bottom = target ? target->stack : S.scheduler_stack_bottom;
    size_t size = target ? target->stack_size : S.scheduler_stack_size;
    __sanitizer_start_switch_fiber(save, bottom, size);
#endif
#if FL_EMU_TSAN
    __tsan_switch_to_fiber(target ? target->tsan_fiber : S.scheduler_tsan,
                           __tsan_switch_to_fiber_no_sync);
#endif
    S.current = target;
#if defined(__x86_64__)
    fl_emu_switch(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
#if FL_EMU_ASAN
    void* fake = S.current ? S.current->fake_stack : S.scheduler_fake_stack;
    if (S.current) {
        __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
    } else {
        __sanitizer_finish_switch_fiber(fake, &S.scheduler_stack_bottom, &S.scheduler_stack_size);
    }
#endif
}

// Back to the scheduler until the fiber's wait is resolved (after a failure
// the scheduler abandons the block and never comes back).
void yield() {
    Fiber* self = S.current;
    switch_to(self->context, S.scheduler, nullptr);
}

[[noreturn]] void finish_fiber();

}  // namespace

// The first code a fiber runs (from fl_emu_fiber_start, or makecontext).
extern "C" __attribute__((visibility("hidden"), used)) void fl_emu_fiber_main() {
#if FL_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &S.scheduler_stack_bottom, &S.scheduler_stack_size);
#endif
#if FL_EMU_TSAN
    __tsan_acquire(&S.launch_begin);
#endif
    S.entry(S.args);
    finish_fiber();
}

namespace {

void finish_fiber() {
    Fiber* self = S.current;
#if FL_EMU_TSAN
    __tsan_release(&S.launch_end);
#endif
    self->wait = Wait::done;
#if FL_EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, S.scheduler_stack_bottom, S.scheduler_stack_size);
#endif
#if FL_EMU_TSAN
    __tsan_switch_to_fiber(S.scheduler_tsan, __tsan_switch_to_fiber_no_sync);
#endif
    S.current = nullptr;
#if defined(__x86_64__)
    void* discard;
    fl_emu_switch(&discard, S.scheduler.sp);
#else
    setcontext(&S.scheduler.uc);
#endif
    __builtin_unreachable();
}

void start_fiber(Fiber& fiber) {
    if (!fiber.stack) {
        fiber.stack_size = kStackSize;
        fiber.stack = static_cast<char*>(std::malloc(fiber.stack_size));
    }
#if defined(__x86_64__)
    // Below a 16-byte aligned top: the return address into fl_emu_fiber_start
    // (whose call then sees rsp = 0 mod 16, as the ABI wants) and 6 registers.
    u64 top = ((u64)(fiber.stack + fiber.stack_size)) & ~(u64)15;
    void** sp = reinterpret_cast<void**>(top);
    *--sp = reinterpret_cast<void*>(&fl_emu_fiber_start);
    for (int r = 0; r < 6; ++r) *--sp = nullptr;
    fiber.context.sp = sp;
#else
    getcontext(&fiber.context.uc);
    fiber.context.uc.uc_stack.ss_sp = fiber.stack;
    fiber.context.uc.uc_stack.ss_size = fiber.stack_size;
    fiber.context.uc.uc_link = nullptr;
    makecontext(&fiber.context.uc, fl_emu_fiber_main, 0);
#endif
#if FL_EMU_TSAN
    fiber.tsan_fiber = __tsan_create_fiber(0);
#endif
    fiber.wait = Wait::none;
    fiber.accesses.clear();
}

void fail(const char* format, ...) {
    if (S.failed) return;
    char message[512];
    va_list args;
    va_start(args, format);
    std::vsnprintf(message, sizeof message, format, args);
    va_end(args);
    char where[128];
    std::snprintf(where, sizeof where, " (block (%u,%u,%u)", S.block_index.x, S.block_index.y,
                  S.block_index.z);
    S.error = std::string(message) + where;
    if (S.current) {
        char thread[64];
        std::snprintf(thread, sizeof thread, ", thread (%u,%u,%u)", S.current->index.x,
                      S.current->index.y, S.current->index.z);
        S.error += thread;
    }
    S.error += ")";
    S.failed = true;
}

// A failure inside a fiber: the fiber never runs again.
[[noreturn]] void fail_here() {
    Fiber* self = S.current;
    self->wait = Wait::done;
    for (;;) switch_to(self->context, S.scheduler, nullptr);
}

// --- traffic -----------------------------------------------------------------------------

// One warp's accesses since its last synchronisation, coalesced as the
// hardware would: the n-th execution of one access site by each lane is one
// warp access, and it costs every distinct 32-byte sector it touches.
void flush_warp(int warp) {
    if (!S.count) return;
    const int first = warp * 32;
    const int last = std::min(S.threads, first + 32);
    struct Key {
        u64 pc;
        u64 occurrence;
        int buffer;
        bool write;
        u64 sector;
        bool operator<(const Key& o) const {
            if (pc != o.pc) return pc < o.pc;
            if (occurrence != o.occurrence) return occurrence < o.occurrence;
            if (buffer != o.buffer) return buffer < o.buffer;
            if (write != o.write) return write < o.write;
            return sector < o.sector;
        }
        bool operator==(const Key& o) const {
            return pc == o.pc && occurrence == o.occurrence && buffer == o.buffer &&
                   write == o.write && sector == o.sector;
        }
    };
    std::vector<Key> keys;
    for (int t = first; t < last; ++t) {
        std::unordered_map<u64, u64> seen;
        for (const Access& a : S.fibers[t].accesses) {
            const u64 occurrence = seen[a.pc]++;
            for (u64 s = a.first_sector; s <= a.last_sector; ++s) {
                keys.push_back(Key{a.pc, occurrence, a.buffer, a.write, s});
            }
        }
        S.fibers[t].accesses.clear();
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    for (const Key& k : keys) {
        S.buffers[k.buffer].counts[k.write ? 3 : 2] += 32;
    }
}

void flush_all_warps() {
    for (int w = 0; w * 32 < S.threads; ++w) flush_warp(w);
}

// --- the scheduler -----------------------------------------------------------------------

const char* wait_name(Wait w) {
    switch (w) {
        case Wait::none: return "running";
        case Wait::block_barrier: return "__syncthreads";
        case Wait::warp_sync: return "__syncwarp";
        case Wait::shuffle: return "__shfl_xor_sync";
        case Wait::done: return "exited";
    }
    return "?";
}

std::string describe(const Fiber& f) {
    char text[256];
    std::snprintf(text, sizeof text, "thread %d %s%s%s:%d", f.linear, wait_name(f.wait),
                  f.file ? " at " : "", f.file ? f.file : "", f.line);
    return text;
}

// Resolves the warp operation of `warp` if every lane of its mask waits at
// it; returns whether it did. Divergence fails the launch.
bool resolve_warp(int warp) {
    const int first = warp * 32;
    const int last = std::min(S.threads, first + 32);
    // A lane at a warp operation, to compare the others against.
    const Fiber* probe = nullptr;
    for (int t = first; t < last; ++t) {
        if (S.fibers[t].wait == Wait::warp_sync || S.fibers[t].wait == Wait::shuffle) {
            probe = &S.fibers[t];
            break;
        }
    }
    if (!probe) return false;
    for (int t = first; t < last; ++t) {
        const Fiber& f = S.fibers[t];
        const int lane = t - first;
        const bool named = (probe->mask >> lane) & 1u;
        if (!named) continue;
        if (f.wait == Wait::none) return false;  // still running: not yet
        if (f.wait != probe->wait || f.line != probe->line || f.file != probe->file ||
            f.mask != probe->mask || (f.wait == Wait::shuffle && f.width != probe->width)) {
            fail("divergent warp: %s, but %s", describe(*probe).c_str(), describe(f).c_str());
            return false;
        }
    }
    if (last - first < 32 && probe->mask != (1u << (last - first)) - 1 &&
        (probe->mask >> (last - first)) != 0) {
        fail("warp mask 0x%08x names lanes past the block's last thread", probe->mask);
        return false;
    }
    for (int t = first; t < last; ++t) {
        Fiber& f = S.fibers[t];
        const int lane = t - first;
        if (!((probe->mask >> lane) & 1u)) continue;
        if (f.wait == Wait::shuffle) {
            const int width = f.width;
            const int source = (lane & ~(width - 1)) | ((lane ^ f.lane_mask) & (width - 1));
            if (source >= last - first || !((probe->mask >> source) & 1u)) {
                fail("__shfl_xor_sync reads lane %d, which is not in mask 0x%08x", source,
                     probe->mask);
                return false;
            }
            f.result = S.fibers[first + source].value;
        }
    }
    for (int t = first; t < last; ++t) {
        Fiber& f = S.fibers[t];
        if ((probe->mask >> (t - first)) & 1u) f.wait = Wait::none;
    }
    ++S.warp_epoch[warp];
    flush_warp(warp);
    return true;
}

bool resolve_block() {
    const Fiber* probe = nullptr;
    for (const Fiber& f : S.fibers) {
        if (f.wait == Wait::none) return false;
        if (f.wait == Wait::block_barrier && !probe) probe = &f;
    }
    if (!probe) return false;
    for (const Fiber& f : S.fibers) {
        if (f.wait == Wait::done) {
            fail("divergent barrier: %s, but %s", describe(*probe).c_str(), describe(f).c_str());
            return false;
        }
        if (f.wait != Wait::block_barrier) return false;  // a warp operation may still resolve
        if (f.line != probe->line || f.file != probe->file) {
            fail("divergent barrier: %s, but %s", describe(*probe).c_str(), describe(f).c_str());
            return false;
        }
    }
    for (Fiber& f : S.fibers) f.wait = Wait::none;
    ++S.block_epoch;
    for (auto& e : S.warp_epoch) ++e;
    flush_all_warps();
    return true;
}

void run_block() {
    for (int t = 0; t < S.threads; ++t) start_fiber(S.fibers[t]);
    std::fill(S.warp_epoch.begin(), S.warp_epoch.end(), 0);
    S.block_epoch = 0;
    for (;;) {
        bool ran = false;
        for (int t = 0; t < S.threads && !S.failed; ++t) {
            Fiber& f = S.fibers[t];
            if (f.wait != Wait::none) continue;
            switch_to(S.scheduler, f.context, &f);
            ran = true;
        }
        if (S.failed) return;
        bool all_done = true;
        for (const Fiber& f : S.fibers) all_done &= f.wait == Wait::done;
        if (all_done) break;
        bool resolved = false;
        for (int w = 0; w * 32 < S.threads && !S.failed; ++w) resolved |= resolve_warp(w);
        if (S.failed) return;
        resolved |= resolve_block();
        if (S.failed) return;
        if (!resolved && !ran) {
            std::string states;
            for (const Fiber& f : S.fibers) {
                if (f.wait == Wait::done) continue;
                if (!states.empty()) states += "; ";
                states += describe(f);
                if (states.size() > 300) {
                    states += "; ...";
                    break;
                }
            }
            fail("deadlock: no thread can proceed (%s)", states.c_str());
            return;
        }
    }
    flush_all_warps();
}

int find_buffer(u64 address, u64 size) {
    for (size_t i = 0; i < S.buffers.size(); ++i) {
        const Buffer& b = S.buffers[i];
        if (address >= b.begin && address + size <= b.end) return (int)i;
    }
    return -1;
}

void check_shared(Fiber* self, u64 address, u64 size, bool write) {
    const int warp = self->linear / 32;
    for (u64 word = address; word < address + size; ++word) {
        SharedWord& w = S.shared_words[word];
        const bool written = w.block == S.block_serial;
        auto ordered = [&](int other, u64 block_epoch, u64 warp_epoch) {
            if (other == self->linear) return true;
            if (block_epoch != S.block_epoch) return true;
            return other / 32 == warp && warp_epoch != S.warp_epoch[warp];
        };
        if (!write && !written) {
            fail("read of shared memory at +%llu that no thread of this block wrote",
                 (unsigned long long)(word - S.shared_begin));
            fail_here();
        }
        if (written && !ordered(w.writer, w.writer_block_epoch, w.writer_warp_epoch)) {
            fail("shared-memory race at +%llu: thread %d %s a word that thread %d wrote with no "
                 "barrier between", (unsigned long long)(word - S.shared_begin), self->linear,
                 write ? "writes" : "reads", w.writer);
            fail_here();
        }
        if (write && w.reader != -1 && w.block == S.block_serial &&
            !(w.reader >= 0 ? ordered(w.reader, w.reader_block_epoch, w.reader_warp_epoch)
                            : w.reader_block_epoch != S.block_epoch)) {
            fail("shared-memory race at +%llu: thread %d overwrites a word that another thread "
                 "read with no barrier between", (unsigned long long)(word - S.shared_begin),
                 self->linear);
            fail_here();
        }
        if (write) {
            w.block = S.block_serial;
            w.writer = self->linear;
            w.writer_block_epoch = S.block_epoch;
            w.writer_warp_epoch = S.warp_epoch[warp];
            w.reader = -1;
        } else if (w.reader == -1 || w.reader_block_epoch != S.block_epoch) {
            w.reader = self->linear;
            w.reader_block_epoch = S.block_epoch;
            w.reader_warp_epoch = S.warp_epoch[warp];
        } else if (w.reader != self->linear) {
            w.reader = -2;
        }
    }
}

void on_access(void* pointer, u64 size, bool write, u64 pc) {
    Fiber* self = S.current;
    if (!S.active || !self) return;
    const u64 address = (u64)pointer;
    const u64 stack = (u64)self->stack;
    if (address >= stack && address + size <= stack + self->stack_size) return;
    if (++S.accesses > S.access_limit) {
        fail("more than %llu memory accesses: a runaway loop?",
             (unsigned long long)S.access_limit);
        fail_here();
    }
    if (address % size != 0) {
        fail("misaligned %llu-byte %s at %#llx", (unsigned long long)size,
             write ? "store" : "load", (unsigned long long)address);
        fail_here();
    }
    if (address >= S.shared_begin && address + size <= S.shared_end) {
        check_shared(self, address, size, write);
        return;
    }
    const int buffer = find_buffer(address, size);
    if (buffer < 0) {
        fail("%llu-byte %s at %#llx outside every buffer of the launch",
             (unsigned long long)size, write ? "store" : "load", (unsigned long long)address);
        fail_here();
    }
    if (S.count) {
        S.buffers[buffer].counts[write ? 1 : 0] += size;
        self->accesses.push_back(Access{pc, buffer, write, address >> 5, (address + size - 1) >> 5});
    }
}

int find_shared_segment(struct dl_phdr_info* info, size_t, void* data) {
    // The kernel module is the object that holds this function; its
    // zero-initialised writable data is the kernels' __shared__ statics.
    const u64 self = (u64)data;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD) continue;
        const u64 begin = info->dlpi_addr + ph.p_vaddr;
        if (!(ph.p_flags & PF_X) || self < begin || self >= begin + ph.p_memsz) continue;
        for (int j = 0; j < info->dlpi_phnum; ++j) {
            const ElfW(Phdr)& w = info->dlpi_phdr[j];
            if (w.p_type == PT_LOAD && (w.p_flags & PF_W)) {
                S.shared_begin = info->dlpi_addr + w.p_vaddr + w.p_filesz;
                S.shared_end = info->dlpi_addr + w.p_vaddr + w.p_memsz;
            }
        }
        return 1;
    }
    return 0;
}

}  // namespace

// --- the kernel-side calls (cuda_host.h) -------------------------------------------------

extern "C" {

uint3 fl_emu_thread_idx(void) { return S.current->index; }
uint3 fl_emu_block_idx(void) { return S.block_index; }
uint3 fl_emu_block_dim(void) { return S.block; }
uint3 fl_emu_grid_dim(void) { return S.grid; }

void fl_emu_syncthreads(const char* file, int line) {
    Fiber* self = S.current;
#if FL_EMU_TSAN
    __tsan_release(&S.block_sync);
#endif
    self->wait = Wait::block_barrier;
    self->file = file;
    self->line = line;
    yield();
#if FL_EMU_TSAN
    __tsan_acquire(&S.block_sync);
#endif
}

static void warp_wait(Wait kind, unsigned int mask, const char* file, int line) {
    Fiber* self = S.current;
#if FL_EMU_TSAN
    __tsan_release(&S.warp_sync[self->linear / 32]);
#endif
    self->wait = kind;
    self->mask = mask;
    self->file = file;
    self->line = line;
    yield();
#if FL_EMU_TSAN
    __tsan_acquire(&S.warp_sync[self->linear / 32]);
#endif
}

void fl_emu_syncwarp(unsigned int mask, const char* file, int line) {
    if (!((mask >> (S.current->linear % 32)) & 1u)) {
        fail("__syncwarp(0x%08x) called by a lane outside its mask", mask);
        fail_here();
    }
    warp_wait(Wait::warp_sync, mask, file, line);
}

unsigned long long fl_emu_shfl_xor(unsigned int mask, unsigned long long bits, int lane_mask,
                                   int width, const char* file, int line) {
    Fiber* self = S.current;
    if (width <= 0 || width > 32 || (width & (width - 1))) {
        fail("__shfl_xor_sync width %d is not a power of two in [1, 32]", width);
        fail_here();
    }
    if (!((mask >> (self->linear % 32)) & 1u)) {
        fail("__shfl_xor_sync(0x%08x) called by a lane outside its mask", mask);
        fail_here();
    }
    self->value = bits;
    self->lane_mask = lane_mask;
    self->width = width;
    warp_wait(Wait::shuffle, mask, file, line);
    return self->result;
}

// ThreadSanitizer's instrumentation entry points, resolved here in the
// hooked build (the kernel file compiled with -fsanitize=thread and linked
// without its runtime).
#if defined(FL_EMU_HOOKS)
#define FL_EMU_HOOK(SIZE)                                                                    \
    void __tsan_read##SIZE(void* p) { on_access(p, SIZE, false, (u64)__builtin_return_address(0)); } \
    void __tsan_write##SIZE(void* p) { on_access(p, SIZE, true, (u64)__builtin_return_address(0)); } \
    void __tsan_unaligned_read##SIZE(void* p) {                                              \
        on_access(p, SIZE, false, (u64)__builtin_return_address(0));                         \
    }                                                                                        \
    void __tsan_unaligned_write##SIZE(void* p) {                                             \
        on_access(p, SIZE, true, (u64)__builtin_return_address(0));                          \
    }
FL_EMU_HOOK(1)
FL_EMU_HOOK(2)
FL_EMU_HOOK(4)
FL_EMU_HOOK(8)
FL_EMU_HOOK(16)
void __tsan_init(void) {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit(void) {}
void __tsan_read_range(void* p, unsigned long size) {
    on_access(p, size, false, (u64)__builtin_return_address(0));
}
void __tsan_write_range(void* p, unsigned long size) {
    on_access(p, size, true, (u64)__builtin_return_address(0));
}
void __tsan_vptr_update(void**, void*) {}
#endif

// --- the launch API (ctypes) -------------------------------------------------------------

// Runs entry(args) over grid x block. `buffers` holds 2 * buffer_count
// addresses: [begin, end) of each device buffer the launch may touch.
// `counts` (may be null) receives 4 byte counts per buffer: loaded and stored
// by the kernel's instructions, then read and written in 32-byte sectors
// per warp access.
// Returns 0, or 1 with a message in `error`.
int fl_emu_launch(Trampoline entry, void** args, const unsigned int* grid,
                  const unsigned int* block, const unsigned long long* buffers, int buffer_count,
                  unsigned long long* counts, unsigned long long access_limit, char* error,
                  int error_size) {
    S.entry = entry;
    S.args = args;
    S.grid = uint3{grid[0], grid[1], grid[2]};
    S.block = uint3{block[0], block[1], block[2]};
    S.threads = (int)(block[0] * block[1] * block[2]);
    S.failed = false;
    S.error.clear();
    S.buffers.clear();
    for (int i = 0; i < buffer_count; ++i) {
        S.buffers.push_back(Buffer{buffers[2 * i], buffers[2 * i + 1], {0, 0, 0, 0}});
    }
    S.count = counts != nullptr;
    S.accesses = 0;
    S.access_limit = access_limit;
    S.shared_words.clear();
    if (S.shared_end == 0) dl_iterate_phdr(find_shared_segment, (void*)&find_shared_segment);
    if (S.threads <= 0 || S.threads > 1024) {
        std::snprintf(error, error_size, "block of %d threads: must be 1 to 1024", S.threads);
        return 1;
    }
    if ((u64)S.fibers.size() < (u64)S.threads) S.fibers.resize(S.threads);
    S.warp_epoch.assign((S.threads + 31) / 32, 0);
#if FL_EMU_TSAN
    S.warp_sync.assign(S.warp_epoch.size(), 0);
    if (!S.scheduler_tsan) S.scheduler_tsan = __tsan_get_current_fiber();
    __tsan_release(&S.launch_begin);
#endif
    // Fibers beyond this launch's block size keep their stacks for later.
    std::vector<Fiber> spare;
    if ((int)S.fibers.size() > S.threads) {
        spare.assign(std::make_move_iterator(S.fibers.begin() + S.threads),
                     std::make_move_iterator(S.fibers.end()));
        S.fibers.resize(S.threads);
    }
    for (int t = 0; t < S.threads; ++t) {
        Fiber& f = S.fibers[t];
        f.linear = t;
        f.index = uint3{t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
    }
    S.active = true;
    for (unsigned z = 0; z < grid[2] && !S.failed; ++z) {
        for (unsigned y = 0; y < grid[1] && !S.failed; ++y) {
            for (unsigned x = 0; x < grid[0] && !S.failed; ++x) {
                S.block_index = uint3{x, y, z};
                ++S.block_serial;
                run_block();
#if FL_EMU_TSAN
                for (Fiber& f : S.fibers) {
                    __tsan_destroy_fiber(f.tsan_fiber);
                    f.tsan_fiber = nullptr;
                }
#endif
            }
        }
    }
    S.active = false;
#if FL_EMU_TSAN
    __tsan_acquire(&S.launch_end);
#endif
    for (auto& f : spare) S.fibers.push_back(std::move(f));
    if (counts) {
        for (size_t i = 0; i < S.buffers.size(); ++i) {
            for (int c = 0; c < 4; ++c) counts[4 * i + c] = S.buffers[i].counts[c];
        }
    }
    if (S.failed) {
        std::snprintf(error, error_size, "%s", S.error.c_str());
        return 1;
    }
    return 0;
}

int fl_emu_hooked(void) {
#if defined(FL_EMU_HOOKS)
    return 1;
#else
    return 0;
#endif
}

}  // extern "C"
