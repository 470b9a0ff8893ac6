/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * kg_bpf.h: the small set of BPF definitions kmodguard's programs use,
 * written for this project so that no host header enters the build.
 *
 * Helper numbers are the kernel's stable UAPI (enum bpf_func_id in
 * include/uapi/linux/bpf.h); only the helpers kmodguard calls are declared.
 * Kernel types come from vmlinux.h, written by hand with CO-RE relocations.
 */
#ifndef KG_BPF_H
#define KG_BPF_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef signed short __s16;
typedef unsigned int __u32;
typedef signed int __s32;
typedef unsigned long long __u64;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef _Bool bool;
#define true 1
#define false 0
#ifndef NULL
#define NULL ((void *)0)
#endif

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))
#define __noinline __attribute__((noinline))
#define __hidden __attribute__((visibility("hidden")))
#define __weak __attribute__((weak))
#define __ksym __attribute__((section(".ksyms")))
#define __kconfig __attribute__((section(".kconfig")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define barrier() asm volatile("" ::: "memory")
#define barrier_var(var) asm volatile("" : "+r"(var))

/* BTF-defined maps. */
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

/* enum bpf_map_type */
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_HASH 5
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_ARRAY_OF_MAPS 12
#define BPF_MAP_TYPE_HASH_OF_MAPS 13
#define BPF_MAP_TYPE_RINGBUF 27

/* Map flags and update flags. */
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_EXIST 2
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_F_RDONLY_PROG (1U << 7)
#define BPF_F_INNER_MAP (1U << 12)
#define BPF_RB_NO_WAKEUP (1ULL << 0)
#define BPF_RB_FORCE_WAKEUP (1ULL << 1)

/* Helpers (enum bpf_func_id). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_trace_printk)(const char *fmt, __u32 fmt_size, ...) = (void *)6;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;
static __u64 (*bpf_get_current_task)(void) = (void *)35;
static __u64 (*bpf_get_current_cgroup_id)(void) = (void *)80;
static long (*bpf_send_signal)(__u32 sig) = (void *)109;
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)112;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static long (*bpf_probe_read_user_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)114;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size,
					 const void *unsafe_ptr) = (void *)115;
static __u64 (*bpf_ktime_get_boot_ns)(void) = (void *)125;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) = (void *)130;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static void (*bpf_ringbuf_discard)(void *data, __u64 flags) = (void *)133;
static __u64 (*bpf_ringbuf_query)(void *ringbuf, __u64 flags) = (void *)134;
#define BPF_RB_AVAIL_DATA 0
#define BPF_RB_RING_SIZE 1
struct path;
static long (*bpf_d_path)(struct path *path, char *buf, __u32 sz) = (void *)147;
static long (*bpf_copy_from_user)(void *dst, __u32 size, const void *user_ptr) = (void *)148;
struct task_struct;
static struct task_struct *(*bpf_get_current_task_btf)(void) = (void *)158;
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx,
			__u64 flags) = (void *)181;
struct file;
static long (*bpf_ima_file_hash)(struct file *file, void *dst, __u32 size) = (void *)193;

/*
 * CO-RE reads. kg_read(dst, src) copies the kernel field src into dst with a
 * relocation recorded for src, so the offset follows the running kernel.
 */
#define kg_read(dst, src) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), __builtin_preserve_access_index(&(src)))
/* KG_FIELD_EXISTS(s->f) is true when the running kernel has the field. */
#define KG_FIELD_EXISTS(field) __builtin_preserve_field_info(field, 2 /* BPF_FIELD_EXISTS */)
/* KG_FIELD_OFFSET(s->f) is the field's byte offset in the running kernel. */
#define KG_FIELD_OFFSET(field) __builtin_preserve_field_info(field, 0 /* BPF_FIELD_BYTE_OFFSET */)
/* kg_container_of(ptr, type, member), with the member's offset relocated. */
#define kg_container_of(ptr, type, member) \
	((type *)((void *)(ptr)-KG_FIELD_OFFSET(((type *)0)->member)))

/* Raw tracepoint context: the tracepoint's arguments as u64s. */
struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

/* Errno values the programs return or compare against. */
#define EPERM 1
#define ENOENT 2
#define E2BIG 7
#define EFAULT 14
#define EINVAL 22
#define ENOSYS 38

#endif /* KG_BPF_H */
