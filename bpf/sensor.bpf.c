//go:build ignore
// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * sensor.bpf.c: kmodguard's module syscall sensor.
 *
 * Two BTF-typed raw tracepoints, sys_enter and sys_exit, watch init_module,
 * finit_module and delete_module (plain raw tracepoints are the fallback,
 * and fentry/fexit on the syscall functions an option where the kernel
 * allows it). Every other syscall leaves after a few compares of the
 * syscall number (sys_enter) or of the saved number in pt_regs (sys_exit),
 * before any helper call or map lookup.
 *
 * At sys_enter the program sends, through one ring buffer:
 *   - for init_module, the image in chunks (struct kg_chunk), up to
 *     kg_image_cap bytes, when the caller may load modules at all;
 *   - then one record (struct kg_event) with the arguments, what the kernel
 *     knows of the finit_module file, and the process context; its strings
 *     are packed, and only the bytes used are sent.
 * At sys_exit it sends the result (struct kg_exit). User space joins the
 * three by thread id: a thread is in one syscall at a time, and the ring
 * buffer keeps reservation order.
 *
 * An init_module image that cannot be read at sys_enter (its pages are not
 * resident, as with a fresh mapping of the module file, and a tracepoint
 * cannot fault them in) is read again at sys_exit, where the kernel has just
 * copied it and so faulted it in: its chunks go before the kg_exit record,
 * which says KG_F_IMAGE_AT_EXIT. The params string of init_module and
 * finit_module gets the same second chance: the kernel copies it during the
 * syscall (strndup_user), so a page not resident at sys_enter is resident
 * at sys_exit, and the kg_exit record carries the string and says
 * KG_F_PARAMS_AT_EXIT. Such calls are remembered in kg_retries, which only
 * the sys_exit of init_module and finit_module looks up: other syscalls
 * leave sys_exit as before.
 *
 * Nothing vanishes silently: a read that fails is flagged in the record, a
 * record the ring buffer cannot take is counted in kg_counters, and so are
 * the calls of unprivileged callers over kg_unprivileged_rate.
 *
 * A flood cannot hide a load: an init_module image that fails the kernel's
 * own ELF header checks can load nothing, whatever else it holds. Such
 * junk is sent once per thread and second, with the count of the thread's
 * junk calls folded into it since its previous event, and not at all while
 * the ring buffer is over three quarters full: that last quarter is kept
 * for images that can load (see kg_junk).
 */
#include "vmlinux.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#if defined(__TARGET_ARCH_x86)
#define KG_NR_INIT_MODULE 175
#define KG_NR_FINIT_MODULE 313
#define KG_NR_DELETE_MODULE 176
#define KG_ARG0(r) ((r)->di)
#define KG_ARG1(r) ((r)->si)
#define KG_ARG2(r) ((r)->dx)
#define KG_SYSCALL_NR(r) ((r)->orig_ax)
/*
 * 32-bit callers (ia32 emulation: int 0x80, sysenter) have numbers of their
 * own, and their 175, 176 and 313 are other syscalls; x32 callers set the
 * x32 bit on the native numbers. kg_native_nr sorts them out, after a cheap
 * first compare against all six.
 */
#define KG_NR32_INIT_MODULE 128
#define KG_NR32_DELETE_MODULE 129
#define KG_NR32_FINIT_MODULE 350
#define KG_X32_SYSCALL_BIT 0x40000000
#define KG_TS_COMPAT 0x0002
#define KG_IS_CANDIDATE_NR(nr)                                                         \
	(KG_IS_MODULE_NR((nr) & ~KG_X32_SYSCALL_BIT) || (nr) == KG_NR32_INIT_MODULE || \
	 (nr) == KG_NR32_DELETE_MODULE || (nr) == KG_NR32_FINIT_MODULE)
#elif defined(__TARGET_ARCH_arm64)
#define KG_NR_INIT_MODULE 105
#define KG_NR_FINIT_MODULE 273
#define KG_NR_DELETE_MODULE 106
#define KG_ARG0(r) ((r)->regs[0])
#define KG_ARG1(r) ((r)->regs[1])
#define KG_ARG2(r) ((r)->regs[2])
#define KG_SYSCALL_NR(r) ((r)->syscallno)
/*
 * 32-bit (aarch32) callers use the ARM EABI numbers
 * (arch/arm/tools/syscall.tbl), and their 105, 106 and 273 are getitimer,
 * stat and pciconfig_write. The syscall's saved pstate says which kind of
 * caller made it: PSR_MODE32_BIT (0x10) is set for AArch32, an
 * architectural bit that, unlike the kernel's TIF_32BIT flag number, no
 * kernel release can move. kg_native_nr sorts them out, after a cheap first
 * compare against all six.
 */
#define KG_NR32_INIT_MODULE 128
#define KG_NR32_DELETE_MODULE 129
#define KG_NR32_FINIT_MODULE 379
#define KG_PSR_MODE32_BIT 0x10
#define KG_IS_CANDIDATE_NR(nr)                                                                  \
	(KG_IS_MODULE_NR(nr) || (nr) == KG_NR32_INIT_MODULE || (nr) == KG_NR32_DELETE_MODULE || \
	 (nr) == KG_NR32_FINIT_MODULE)
#else
#error "kmodguard's sensor supports amd64 and arm64 (set __TARGET_ARCH_x86 or __TARGET_ARCH_arm64)"
#endif

#define KG_IS_MODULE_NR(nr) \
	((nr) == KG_NR_INIT_MODULE || (nr) == KG_NR_FINIT_MODULE || (nr) == KG_NR_DELETE_MODULE)

/* Buffer sizes. Paths hold their components leaf first, each NUL-ended. */
#define KG_PARAMS_MAX 4096
#define KG_PATH_MAX 1024
#define KG_CGROUP_MAX 512
#define KG_CMDLINE_MAX 1024
#define KG_MODNAME_MAX 64
#define KG_COMM_LEN 16
#define KG_NAME_MAX 256 /* one path component, NUL included */
#define KG_PATH_DEPTH 48
#define KG_CHUNK 16384
#define KG_CHUNK_SMALL 4096
/* 6.13 on: the top bit of inode->i_ctime_nsec marks a queried ctime (include/linux/fs.h). */
#define KG_I_CTIME_QUERIED (1U << 31)
/*
 * An event's strings share one buffer, in this order, each segment right
 * after the one before: name, params, path, exe, cmdline, cgroup. Only the
 * bytes used travel through the ring buffer.
 */
#define KG_DATA_MAX                                                                    \
	(KG_MODNAME_MAX + KG_PARAMS_MAX + KG_PATH_MAX + KG_PATH_MAX + KG_CMDLINE_MAX + \
	 KG_CGROUP_MAX)

/* Record kinds, the first byte of every ring buffer record. */
enum kg_record {
	KG_REC_EVENT = 1,
	KG_REC_CHUNK = 2,
	KG_REC_EXIT = 3,
};

enum kg_syscall {
	KG_SYS_INIT_MODULE = 1,
	KG_SYS_FINIT_MODULE = 2,
	KG_SYS_DELETE_MODULE = 3,
	KG_SYS_MODULE_REQUEST = 4, /* autoload (request_module): no exit record */
	KG_SYS_MODULE_LOAD = 5,    /* module:module_load: no exit record */
	KG_SYS_MODULE_FREE = 6,    /* module:module_free: no exit record */
};

/* Capture flags of struct kg_event. */
enum kg_flag {
	KG_F_IMAGE_TRUNCATED = 1 << 0,   /* len was over kg_image_cap */
	KG_F_IMAGE_UNREADABLE = 1 << 1,  /* a read of the image failed */
	KG_F_IMAGE_DROPPED = 1 << 2,     /* the ring buffer refused a chunk */
	KG_F_PARAMS_TRUNCATED = 1 << 3,  /* no NUL within KG_PARAMS_MAX */
	KG_F_PARAMS_UNREADABLE = 1 << 4, /* the params pointer faulted */
	KG_F_NAME_UNREADABLE = 1 << 5,   /* delete_module's name faulted */
	KG_F_NAME_TRUNCATED = 1 << 6,    /* no NUL within KG_MODNAME_MAX */
	KG_F_FILE_UNRESOLVED = 1 << 7,   /* finit_module's fd is not an open file */
	KG_F_PATH_TRUNCATED = 1 << 8,    /* the file path walk hit its bounds */
	KG_F_EXE_TRUNCATED = 1 << 9,
	KG_F_CGROUP_TRUNCATED = 1 << 10,
	KG_F_CMDLINE_TRUNCATED = 1 << 11,
	KG_F_CMDLINE_UNREADABLE = 1 << 12,
	/*
	 * The caller lacks CAP_SYS_MODULE in the initial user namespace. The
	 * kernel refuses it before reading the image, so the sensor does not
	 * copy the image either: an unprivileged flood of large images must
	 * not crowd real loads out of the ring buffer.
	 */
	KG_F_IMAGE_SKIPPED = 1 << 13,
	KG_F_EXE_DELETED = 1 << 14, /* the executable is unlinked (or a memfd) */
	/*
	 * In struct kg_exit: the image could not be read at sys_enter (its
	 * pages were not resident, say a fresh file mapping) and was read in
	 * full at sys_exit, after the kernel's own copy faulted it in. It is
	 * what the buffer held then, not necessarily what the kernel copied.
	 */
	KG_F_IMAGE_AT_EXIT = 1 << 15,
	/*
	 * In struct kg_exit: the params could not be read at sys_enter (their
	 * page was not resident) and were read at sys_exit, after the
	 * kernel's own copy faulted them in; the record carries them. They
	 * are what the buffer held then, not necessarily what the kernel
	 * copied. KG_F_PARAMS_TRUNCATED may come with it.
	 */
	KG_F_PARAMS_AT_EXIT = 1 << 16,
	/*
	 * The caller's parent is a kernel thread: the caller was started by
	 * the kernel (a user-mode helper such as the modprobe of an autoload
	 * request). No process of user space can have such a parent.
	 */
	KG_F_PARENT_KTHREAD = 1 << 17,
	/*
	 * module_load: the kernel's struct module says the signature was
	 * verified (sig_ok). KG_F_SIG_KNOWN says the kernel has the field at
	 * all (CONFIG_MODULE_SIG); without it, KG_F_SIG_OK means nothing.
	 */
	KG_F_SIG_OK = 1 << 18,
	KG_F_SIG_KNOWN = 1 << 19,
};

#define KG_PF_KTHREAD 0x00200000 /* task_struct.flags: a kernel thread */

/* Indexes of kg_counters. */
enum kg_counter {
	KG_CNT_EVENTS = 0,        /* event records submitted */
	KG_CNT_DROPS = 1,         /* event records the ring buffer refused */
	KG_CNT_CHUNK_DROPS = 2,   /* image chunks the ring buffer refused */
	KG_CNT_EXIT_DROPS = 3,    /* exit records the ring buffer refused */
	KG_CNT_TRUNCATIONS = 4,   /* events with anything cut short */
	KG_CNT_READ_FAILURES = 5, /* events with a failed read of user memory */
	KG_CNT_THROTTLED = 6,     /* unprivileged calls over kg_unprivileged_rate */
	KG_CNT_COALESCED = 7,     /* junk init_module calls folded into a later event (kg_junk) */
	KG_CNT_MAX = 8,
};

/* One module syscall at sys_enter: a header, then data_len bytes of data. */
struct kg_event {
	__u8 kind;
	__u8 syscall;
	__u16 data_len;
	__u32 flags;
	__u64 ts; /* CLOCK_BOOTTIME, ns */
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 loginuid;
	__u32 pidns;
	__u32 mntns;
	__u64 cgroup_id;
	__u64 cap_effective;
	__u64 len;      /* init_module: the len argument */
	__u64 captured; /* init_module: image bytes sent in chunks */
	__s32 fd;
	__u32 raw_flags;
	__u64 ino;
	__u64 size;
	__s64 mtime_sec;
	__u32 mtime_nsec;
	__u32 dev; /* kernel dev_t: major << 20 | minor */
	/* ctime: every write and metadata change moves it; utimensat cannot set it. */
	__s64 ctime_sec;
	__u32 ctime_nsec;
	__u32 userns; /* the caller's user namespace (cred->user_ns), inode number */
	/* Segment lengths in data, NULs included. */
	__u16 name_len;
	__u16 params_len;
	__u16 path_len;
	__u16 exe_len;
	__u16 cmdline_len;
	__u16 cgroup_len;
	/*
	 * init_module: calls of this thread with images the kernel cannot
	 * load that were not sent since its previous event (see kg_junk).
	 */
	__u32 coalesced;
	/*
	 * module_load, module_free: the struct module's address (the key that
	 * ties a free to its load) and its taint bits (mod->taints).
	 */
	__u64 module;
	__u64 taints;
	char comm[KG_COMM_LEN];
	char data[KG_DATA_MAX];
};

/*
 * kg_segment returns where the next segment of e's data starts, bounded so
 * that max more bytes fit (the verifier cannot know that the lengths before
 * it are bounded; at run time the bound never bites).
 */
static __always_inline __u32 kg_segment(struct kg_event *e, __u32 max)
{
	__u32 pos = e->data_len;

	if (pos > KG_DATA_MAX - max)
		pos = KG_DATA_MAX - max;
	barrier_var(pos);
	return pos;
}

/* A piece of an init_module image. Sent before its event. */
struct kg_chunk {
	__u8 kind;
	__u8 pad[3];
	__u32 tid;
	__u64 ts; /* the event's ts */
	__u64 off;
	__u64 total; /* bytes of the image to be sent, for preallocation */
	__u32 len;
	__u32 pad2;
	char data[KG_CHUNK];
};

/*
 * The result of a module syscall, at sys_exit: a header, then params_len
 * bytes of params. For an init_module whose image could not be read at
 * sys_enter, the image is read once more first (its chunks go before this
 * record, with the event's ts); flags then say how that went:
 * KG_F_IMAGE_AT_EXIT when the whole image was read, else
 * KG_F_IMAGE_UNREADABLE or KG_F_IMAGE_DROPPED. For an init_module or
 * finit_module whose params could not be read at sys_enter, they are read
 * once more into params: KG_F_PARAMS_AT_EXIT (and KG_F_PARAMS_TRUNCATED
 * when cut) when that worked, else KG_F_PARAMS_UNREADABLE.
 */
struct kg_exit {
	__u8 kind;
	__u8 syscall;
	__u16 pad;
	__u32 tid;
	__s64 ret;
	__u32 flags;
	__u16 params_len; /* bytes in params, NUL included; 0 unless KG_F_PARAMS_AT_EXIT */
	__u16 pad2;
	__u64 captured; /* image bytes sent at sys_exit */
	char params[KG_PARAMS_MAX];
};

/* Keep the record types in BTF, so that bpf2go -type mirrors them in Go. */
const struct kg_exit *kg_unused_exit __attribute__((unused));
const struct kg_chunk *kg_unused_chunk __attribute__((unused));
const enum kg_counter *kg_unused_counter __attribute__((unused));
const enum kg_flag *kg_unused_flag __attribute__((unused));
const enum kg_record *kg_unused_record __attribute__((unused));
const enum kg_syscall *kg_unused_syscall __attribute__((unused));

/* Set by user space at load time. */
volatile const __u64 kg_image_cap = 16 << 20;
/*
 * Events per second and CPU from callers without CAP_SYS_MODULE (which the
 * kernel refuses at once); 0 for no limit. A flood of such calls then
 * cannot crowd real loads out of the ring buffer; what is cut is counted.
 */
volatile const __u32 kg_unprivileged_rate = 1000;

/* events: every record, in reservation order. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 32 << 20);
} kg_events SEC(".maps");

/* kg_counters: enum kg_counter -> count, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KG_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kg_counters SEC(".maps");

/* kg_event_buf: 0 -> the event being filled on this CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kg_event);
} kg_event_buf SEC(".maps");

struct kg_bucket {
	__u64 window; /* start of the current second, boot ns */
	__u64 count;  /* unprivileged events in it */
};

/* kg_buckets: 0 -> this CPU's unprivileged event count. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kg_bucket);
} kg_buckets SEC(".maps");

/* kg_throttled_tids: tid -> 1 while a throttled or folded syscall runs, so that its exit is skipped too. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} kg_throttled_tids SEC(".maps");

/*
 * What to read again at sys_exit, because its enter-time read failed: an
 * init_module image (image and total set), the params of an init_module or
 * finit_module (params set), or both.
 */
struct kg_retry {
	__u64 image;
	__u64 total;  /* bytes to send */
	__u64 params; /* the params pointer, or 0 */
	__u64 ts;     /* the event's ts */
};

/*
 * kg_retries: tid -> what to read again at the exit of the init_module or
 * finit_module it is in, only while a failed enter-time read waits for
 * sys_exit. Empty nearly always, and only looked up at the exit of those
 * two syscalls. Only callers that may load modules get an entry: the kernel
 * refuses the others before it copies anything, and their floods must not
 * evict a real load's entry from this LRU map.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct kg_retry);
} kg_retries SEC(".maps");

/* kg_exit_buf: 0 -> the exit record being filled on this CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kg_exit);
} kg_exit_buf SEC(".maps");

/*
 * Waking the reader is most of what a record costs its producer: the ring
 * buffer's irq_work, then the reader's thread on another CPU, each an
 * interrupt, and in a virtual machine an exit to the host each. By default
 * a record wakes the reader whenever the reader has caught up, which is
 * every record when the reader keeps up. The sensor wakes it instead at
 * most once every kg_wake_ns (set by user space): the last record of a
 * syscall forces a wakeup if none was forced in that time, and is committed
 * without one otherwise; an image chunk, always followed by its event,
 * never wakes. The reader, once woken, polls again kg_wake_ns later for the
 * records committed without a wakeup in between (bpf/reader.go). A record
 * after a quiet spell therefore wakes the reader at once.
 */
volatile const __u64 kg_wake_ns = 1000000;

/* Boot ns of the last forced wakeup, on any CPU (a lost race only wakes twice). */
__u64 kg_last_wake = 0;

/* kg_wake gives the wakeup flags of the last record of a syscall made at now. */
static __always_inline __u64 kg_wake(__u64 now)
{
	if (now - kg_last_wake >= kg_wake_ns) {
		kg_last_wake = now;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void kg_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&kg_counters, &idx);

	if (v)
		(*v)++;
}

static __always_inline struct kg_event *kg_scratch(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&kg_event_buf, &key);
}

/* kg_event_init starts e as an event record at ts with nothing in it. */
static __always_inline void kg_event_init(struct kg_event *e, __u64 ts)
{
	e->kind = KG_REC_EVENT;
	e->ts = ts;
	e->flags = 0;
	e->data_len = 0;
	e->params_len = 0;
	e->name_len = 0;
	e->exe_len = 0;
	e->path_len = 0;
	e->cgroup_len = 0;
	e->cmdline_len = 0;
	e->len = 0;
	e->captured = 0;
	e->fd = -1;
	e->raw_flags = 0;
	e->ino = 0;
	e->size = 0;
	e->mtime_sec = 0;
	e->mtime_nsec = 0;
	e->ctime_sec = 0;
	e->ctime_nsec = 0;
	e->userns = 0;
	e->dev = 0;
	e->ppid = 0;
	e->pidns = 0;
	e->mntns = 0;
	e->cap_effective = 0;
	e->coalesced = 0;
	e->module = 0;
	e->taints = 0;
}

/* The state of a path walk, carried across bpf_loop steps. */
struct kg_walk {
	struct dentry *d;
	struct mount *mnt;
	struct kernfs_node *kn;
	__u32 base; /* where the segment starts in data */
	__u32 off;  /* bytes written so far */
	__u32 done; /* set when the walk reached its root */
};

/*
 * kg_path_step is one step of a walk from a dentry up to the root of its
 * mount namespace: it either writes one name (leaf first, NUL-ended) or
 * crosses from a mount's root to where it is mounted. Run under bpf_loop, so
 * that the verifier checks the step once rather than every iteration.
 */
static long kg_path_step(__u32 i, struct kg_walk *w)
{
	struct kg_event *e = kg_scratch();
	struct dentry *d = w->d, *root = NULL, *parent = NULL;
	struct mount *mnt = w->mnt, *mnt_parent = NULL;
	const unsigned char *name = NULL;
	__u32 base = w->base, off = w->off;
	__u64 at;
	long n;

	if (!e || !d || !mnt)
		return 1;
	kg_read(root, mnt->mnt.mnt_root);
	kg_read(parent, d->d_parent);
	if (d == root) {
		kg_read(mnt_parent, mnt->mnt_parent);
		if (!mnt_parent || mnt_parent == mnt)
			goto done; /* the namespace's root mount */
		kg_read(w->d, mnt->mnt_mountpoint);
		w->mnt = mnt_parent;
		return 0;
	}
	if (off > KG_PATH_MAX - KG_NAME_MAX)
		return 1; /* the segment is full */
	kg_read(name, d->d_name.name);
	/* Checked right before the write, so that older verifiers see it. */
	at = (__u64)base + off;
	if (at > KG_DATA_MAX - KG_NAME_MAX)
		return 1;
	barrier_var(at);
	n = bpf_probe_read_kernel_str(e->data + at, KG_NAME_MAX, name);
	if (n <= 0)
		return 1;
	w->off = off + n;
	if (d == parent)
		goto done; /* a pseudo or detached dentry (memfd): its name is all there is */
	w->d = parent;
	return 0;
done:
	w->done = 1;
	return 1;
}

/*
 * kg_walk_path appends the path of p to e's data as the next segment and
 * returns its length; it sets trunc in e->flags when the walk ran out of
 * depth or room.
 */
static __always_inline __u16 kg_walk_path(struct kg_event *e, struct path *p, __u32 trunc)
{
	struct vfsmount *vfs = NULL;
	struct kg_walk w = { .base = kg_segment(e, KG_PATH_MAX) };

	kg_read(w.d, p->dentry);
	kg_read(vfs, p->mnt);
	if (vfs)
		w.mnt = kg_container_of(vfs, struct mount, mnt);
	bpf_loop(KG_PATH_DEPTH, kg_path_step, &w, 0);
	if (!w.done)
		e->flags |= trunc;
	e->data_len = w.base + w.off;
	return w.off;
}

/* kg_cgroup_step is one step of the kernfs walk of the task's cgroup. */
static long kg_cgroup_step(__u32 i, struct kg_walk *w)
{
	struct kg_event *e = kg_scratch();
	struct kernfs_node *kn = w->kn, *parent = NULL;
	const char *name = NULL;
	__u32 base = w->base, off = w->off;
	__u64 at;
	long n;

	if (!e)
		return 1;
	if (!kn)
		goto done;
	if (KG_FIELD_EXISTS(kn->__parent))
		kg_read(parent, kn->__parent);
	else
		kg_read(parent, ((struct kernfs_node___v61 *)kn)->parent);
	if (!parent)
		goto done; /* the root's name is not part of the path */
	if (off > KG_CGROUP_MAX - KG_NAME_MAX)
		return 1; /* the segment is full */
	kg_read(name, kn->name);
	at = (__u64)base + off;
	if (at > KG_DATA_MAX - KG_NAME_MAX)
		return 1;
	barrier_var(at);
	n = bpf_probe_read_kernel_str(e->data + at, KG_NAME_MAX, name);
	if (n <= 0)
		return 1;
	w->off = off + n;
	w->kn = parent;
	return 0;
done:
	w->done = 1;
	return 1;
}

/* kg_walk_cgroup appends the task's cgroup v2 path, leaf first. */
static __always_inline __u16 kg_walk_cgroup(struct kg_event *e, struct task_struct *task)
{
	struct css_set *cgroups = NULL;
	struct cgroup *cgrp = NULL;
	struct kg_walk w = { .base = kg_segment(e, KG_CGROUP_MAX) };

	kg_read(cgroups, task->cgroups);
	if (cgroups)
		kg_read(cgrp, cgroups->dfl_cgrp);
	if (!cgrp)
		return 0;
	kg_read(w.kn, cgrp->kn);
	bpf_loop(KG_PATH_DEPTH, kg_cgroup_step, &w, 0);
	if (!w.done)
		e->flags |= KG_F_CGROUP_TRUNCATED;
	e->data_len = w.base + w.off;
	return w.off;
}

/* kg_cap_effective reads cred's effective capabilities, as one u64. */
static __always_inline __u64 kg_cap_effective(const struct cred *cred)
{
	__u64 caps = 0;

	if (!cred)
		return 0;
	if (KG_FIELD_EXISTS(cred->cap_effective.val)) {
		kg_read(caps, cred->cap_effective.val);
	} else {
		struct cred___v61 *old = (void *)cred;
		__u32 lo = 0, hi = 0;

		kg_read(lo, old->cap_effective.cap[0]);
		kg_read(hi, old->cap_effective.cap[1]);
		caps = (__u64)hi << 32 | lo;
	}
	return caps;
}

#define KG_CAP_SYS_MODULE 16

/*
 * kg_may_load is the kernel's own first check of a module load: the caller
 * holds CAP_SYS_MODULE in the initial user namespace.
 */
static __always_inline bool kg_may_load(struct task_struct *task)
{
	const struct cred *cred = NULL;
	struct user_namespace *ns = NULL;
	int level = -1;

	kg_read(cred, task->cred);
	if (!cred)
		return false;
	kg_read(ns, cred->user_ns);
	if (ns)
		kg_read(level, ns->level);
	return level == 0 && (kg_cap_effective(cred) >> KG_CAP_SYS_MODULE) & 1;
}

/* kg_throttle reports whether an unprivileged event is over the rate. */
static __always_inline bool kg_throttle(__u64 now, __u32 tid)
{
	__u32 key = 0;
	__u8 one = 1;
	struct kg_bucket *b;

	if (!kg_unprivileged_rate)
		return false;
	b = bpf_map_lookup_elem(&kg_buckets, &key);
	if (!b)
		return false;
	if (now - b->window >= 1000000000ULL) {
		b->window = now;
		b->count = 0;
	}
	if (b->count < kg_unprivileged_rate) {
		b->count++;
		return false;
	}
	kg_count(KG_CNT_THROTTLED);
	bpf_map_update_elem(&kg_throttled_tids, &tid, &one, BPF_ANY);
	return true;
}

/* Per thread: its init_module calls with images the kernel cannot load. */
struct kg_junk_state {
	__u64 second;  /* boot second of the thread's last junk event */
	__u32 skipped; /* junk calls not sent since its last event */
	__u32 pad;
};

/* kg_junk_tids: tid -> kg_junk_state, for threads that made junk calls. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct kg_junk_state);
} kg_junk_tids SEC(".maps");

#if defined(__TARGET_ARCH_x86)
#define KG_EM_NATIVE 62 /* EM_X86_64 */
#else
#define KG_EM_NATIVE 183 /* EM_AARCH64 */
#endif

/*
 * kg_image_junk says whether an init_module image of len bytes fails the
 * header checks the kernel makes before it loads anything (elf_validity_check
 * in kernel/module/main.c, 6.1 to 7.2): the ELF magic, a relocatable object
 * for this machine with 64-byte section headers that lie inside the image.
 * Such an image loads nothing whatever else it holds. An image whose header
 * cannot be read here is not judged (it is read again at sys_exit).
 */
static __always_inline bool kg_image_junk(const void *image, __u64 len)
{
	struct kg_ehdr {
		__u32 magic;
		__u8 ident[12];
		__u16 type;
		__u16 machine;
		__u32 version;
		__u64 entry, phoff, shoff;
		__u32 flags;
		__u16 ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
	} h;

	if (len < sizeof(h))
		return true;
	if (bpf_probe_read_user(&h, sizeof(h), image))
		return false;
	return h.magic != 0x464c457f /* "\x7fELF" */ || h.type != 1 /* ET_REL */ ||
	       h.machine != KG_EM_NATIVE || h.shentsize != 64 || h.shoff >= len ||
	       (__u64)h.shnum * 64 > len - h.shoff;
}

/*
 * kg_junk decides what becomes of a junk init_module call of thread tid at
 * boot time now: true when it is folded (counted, its exit skipped too),
 * false when it is sent, with *coalesced set to the thread's junk calls
 * folded since its previous event. A thread's first junk call in each
 * second is sent, unless the ring buffer is over three quarters full.
 */
static __always_inline bool kg_junk(__u64 now, __u32 tid, __u32 *coalesced)
{
	__u64 second = now / 1000000000ULL;
	__u64 size = bpf_ringbuf_query(&kg_events, BPF_RB_RING_SIZE);
	bool tight = bpf_ringbuf_query(&kg_events, BPF_RB_AVAIL_DATA) > size / 4 * 3;
	struct kg_junk_state *st = bpf_map_lookup_elem(&kg_junk_tids, &tid);
	__u8 one = 1;

	if (!st) {
		struct kg_junk_state fresh = { .second = tight ? 0 : second, .skipped = tight };

		bpf_map_update_elem(&kg_junk_tids, &tid, &fresh, BPF_ANY);
		if (!tight)
			return false;
	} else if (!tight && st->second != second) {
		st->second = second;
		*coalesced = st->skipped;
		st->skipped = 0;
		return false;
	} else {
		st->skipped++;
	}
	kg_count(KG_CNT_COALESCED);
	bpf_map_update_elem(&kg_throttled_tids, &tid, &one, BPF_ANY);
	return true;
}

/* kg_fill_task fills the process context of the current task. */
static __always_inline void kg_fill_task(struct kg_event *e, struct task_struct *task)
{
	struct task_struct *parent;
	const struct cred *cred;
	struct nsproxy *nsp;
	struct mnt_namespace *mntns;
	struct pid *pid;
	struct pid_namespace *pidns;
	struct mm_struct *mm;
	struct file *exe;
	unsigned int level;
	__u64 id = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();

	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->uid = (__u32)ug;
	e->gid = ug >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->cgroup_id = bpf_get_current_cgroup_id();

	kg_read(parent, task->real_parent);
	if (parent) {
		unsigned int pflags = 0;

		kg_read(e->ppid, parent->tgid);
		kg_read(pflags, parent->flags);
		if (pflags & KG_PF_KTHREAD)
			e->flags |= KG_F_PARENT_KTHREAD;
	}
	e->loginuid = (__u32)-1;
	if (KG_FIELD_EXISTS(task->loginuid))
		kg_read(e->loginuid, task->loginuid.val);

	kg_read(cred, task->cred);
	e->cap_effective = kg_cap_effective(cred);
	if (cred) {
		struct user_namespace *userns = NULL;

		kg_read(userns, cred->user_ns);
		if (userns)
			kg_read(e->userns, userns->ns.inum);
	}

	kg_read(nsp, task->nsproxy);
	if (nsp) {
		kg_read(mntns, nsp->mnt_ns);
		if (mntns)
			kg_read(e->mntns, mntns->ns.inum);
	}
	kg_read(pid, task->thread_pid);
	if (pid) {
		kg_read(level, pid->level);
		/* pid->numbers[level].ns, with the array's offset relocated. */
		bpf_probe_read_kernel(&pidns, sizeof(pidns),
				      (void *)pid + KG_FIELD_OFFSET(pid->numbers) +
					      (__u64)(level & 63) * sizeof(struct upid) +
					      KG_FIELD_OFFSET(((struct upid *)0)->ns));
		if (pidns)
			kg_read(e->pidns, pidns->ns.inum);
	}

	kg_read(mm, task->mm);
	if (mm) {
		unsigned long start = 0, end = 0;
		__u64 n;

		kg_read(exe, mm->exe_file);
		if (exe) {
			struct inode *inode = NULL;
			unsigned int nlink = 1;

			e->exe_len = kg_walk_path(e, &exe->f_path, KG_F_EXE_TRUNCATED);
			kg_read(inode, exe->f_inode);
			if (inode)
				kg_read(nlink, inode->i_nlink);
			if (!nlink)
				e->flags |= KG_F_EXE_DELETED;
		}
		kg_read(start, mm->arg_start);
		kg_read(end, mm->arg_end);
		n = end > start ? end - start : 0;
		if (n > KG_CMDLINE_MAX) {
			n = KG_CMDLINE_MAX;
			e->flags |= KG_F_CMDLINE_TRUNCATED;
		}
		barrier_var(n);
		if (n && n <= KG_CMDLINE_MAX) {
			__u32 pos = kg_segment(e, KG_CMDLINE_MAX);

			if (bpf_probe_read_user(e->data + pos, n, (void *)start)) {
				e->flags |= KG_F_CMDLINE_UNREADABLE;
			} else {
				e->cmdline_len = n;
				e->data_len = pos + n;
			}
		}
	}
	e->cgroup_len = kg_walk_cgroup(e, task);
}

/*
 * kg_params_str reads the params string at uargs into dst, which has room
 * for KG_PARAMS_MAX bytes, and returns its length, NUL included, or a
 * negative number when the read faulted (a page not resident, or a bad
 * pointer). It adds KG_F_PARAMS_TRUNCATED to *flags when the string is
 * longer than dst.
 */
static __always_inline long kg_params_str(char *dst, const char *uargs, __u32 *flags)
{
	long n = bpf_probe_read_user_str(dst, KG_PARAMS_MAX, uargs);
	char next = 0;

	if (n == 0) {
		/*
		 * An empty string: kernels without the fix of
		 * strncpy_from_user_nofault (Debian's 6.1 and 6.12 among them)
		 * return 0 for it rather than 1, and write no NUL. A fault
		 * returns -EFAULT.
		 */
		dst[0] = 0;
		n = 1;
	}
	/* A full buffer is cut unless the string ended exactly there. */
	if (n == KG_PARAMS_MAX &&
	    (bpf_probe_read_user(&next, 1, uargs + KG_PARAMS_MAX - 1) || next != 0))
		*flags |= KG_F_PARAMS_TRUNCATED;
	return n;
}

/* kg_read_params appends a user string of at most KG_PARAMS_MAX bytes. */
static __always_inline void kg_read_params(struct kg_event *e, const char *uargs)
{
	__u32 pos = kg_segment(e, KG_PARAMS_MAX);
	long n = kg_params_str(e->data + pos, uargs, &e->flags);

	if (n < 0) {
		e->flags |= KG_F_PARAMS_UNREADABLE;
		return;
	}
	e->params_len = n;
	e->data_len = pos + n;
}

/* kg_fill_file records what the kernel knows of finit_module's fd. */
static __always_inline void kg_fill_file(struct kg_event *e, struct task_struct *task, int fd)
{
	struct files_struct *files;
	struct fdtable *fdt;
	struct file **fds;
	struct file *f = NULL;
	struct inode *inode;
	struct super_block *sb;
	unsigned int max = 0;

	kg_read(files, task->files);
	if (!files)
		goto unresolved;
	kg_read(fdt, files->fdt);
	if (!fdt)
		goto unresolved;
	kg_read(max, fdt->max_fds);
	if ((__u32)fd >= max)
		goto unresolved;
	kg_read(fds, fdt->fd);
	if (!fds || bpf_probe_read_kernel(&f, sizeof(f), &fds[(__u32)fd]) || !f)
		goto unresolved;

	e->path_len = kg_walk_path(e, &f->f_path, KG_F_PATH_TRUNCATED);
	kg_read(inode, f->f_inode);
	if (!inode)
		return;
	kg_read(e->ino, inode->i_ino);
	kg_read(e->size, inode->i_size);
	kg_read(sb, inode->i_sb);
	if (sb)
		kg_read(e->dev, sb->s_dev);
	if (KG_FIELD_EXISTS(inode->i_mtime_sec)) {
		kg_read(e->mtime_sec, inode->i_mtime_sec);
		kg_read(e->mtime_nsec, inode->i_mtime_nsec);
	} else if (KG_FIELD_EXISTS(((struct inode___v66 *)inode)->__i_mtime)) {
		struct inode___v66 *i66 = (void *)inode;
		long nsec = 0;

		kg_read(e->mtime_sec, i66->__i_mtime.tv_sec);
		kg_read(nsec, i66->__i_mtime.tv_nsec);
		e->mtime_nsec = nsec;
	} else {
		struct inode___v61 *i61 = (void *)inode;
		long nsec = 0;

		kg_read(e->mtime_sec, i61->i_mtime.tv_sec);
		kg_read(nsec, i61->i_mtime.tv_nsec);
		e->mtime_nsec = nsec;
	}
	/* ctime moved to __i_ctime in 6.6, a release before mtime did. */
	if (KG_FIELD_EXISTS(inode->i_ctime_sec)) {
		kg_read(e->ctime_sec, inode->i_ctime_sec);
		kg_read(e->ctime_nsec, inode->i_ctime_nsec);
		e->ctime_nsec &= ~KG_I_CTIME_QUERIED;
	} else if (KG_FIELD_EXISTS(((struct inode___v66 *)inode)->__i_ctime)) {
		struct inode___v66 *i66 = (void *)inode;
		long nsec = 0;

		kg_read(e->ctime_sec, i66->__i_ctime.tv_sec);
		kg_read(nsec, i66->__i_ctime.tv_nsec);
		e->ctime_nsec = nsec;
	} else {
		struct inode___v61 *i61 = (void *)inode;
		long nsec = 0;

		kg_read(e->ctime_sec, i61->i_ctime.tv_sec);
		kg_read(nsec, i61->i_ctime.tv_nsec);
		e->ctime_nsec = nsec;
	}
	return;
unresolved:
	e->flags |= KG_F_FILE_UNRESOLVED;
}

struct kg_image_ctx {
	const char *image;
	__u64 total; /* bytes to send */
	__u64 sent;
	__u64 ts;
	__u32 tid;
	__u32 flags;
};

/*
 * kg_chunk_out sends the n bytes at off of c's image as one chunk record of
 * room data bytes (a constant, at least n), read from the caller's memory
 * straight into the ring buffer; the record's len says how many count.
 */
static __always_inline long kg_chunk_out(struct kg_image_ctx *c, __u64 off, __u64 n,
					 const __u32 room)
{
	struct kg_chunk *ch;

	barrier_var(n);
	if (n == 0 || n > room)
		return 1;
	ch = bpf_ringbuf_reserve(&kg_events, __builtin_offsetof(struct kg_chunk, data) + room, 0);
	if (!ch) {
		kg_count(KG_CNT_CHUNK_DROPS);
		c->flags |= KG_F_IMAGE_DROPPED;
		return 1;
	}
	if (bpf_probe_read_user(ch->data, n, c->image + off)) {
		bpf_ringbuf_discard(ch, BPF_RB_NO_WAKEUP);
		c->flags |= KG_F_IMAGE_UNREADABLE;
		return 1;
	}
	ch->kind = KG_REC_CHUNK;
	ch->tid = c->tid;
	ch->ts = c->ts;
	ch->off = off;
	ch->total = c->total;
	ch->len = n;
	/* Never a wakeup: the chunk's event follows (see kg_wake). */
	bpf_ringbuf_submit(ch, BPF_RB_NO_WAKEUP);
	c->sent = off + n;
	return 0;
}

/*
 * kg_send_chunk is the bpf_loop body: chunk i of the image. A chunk of up
 * to KG_CHUNK_SMALL bytes (a small image, or the tail of one) takes a
 * record of that room, any other one of KG_CHUNK: one copy instead of two
 * through a per-CPU buffer, for at most KG_CHUNK_SMALL, or once per image
 * KG_CHUNK, bytes of slack in the ring buffer.
 */
static long kg_send_chunk(__u32 i, struct kg_image_ctx *c)
{
	__u64 off = (__u64)i * KG_CHUNK;
	__u64 n;

	if (off >= c->total)
		return 1;
	n = c->total - off;
	if (n <= KG_CHUNK_SMALL)
		return kg_chunk_out(c, off, n, KG_CHUNK_SMALL);
	if (n > KG_CHUNK)
		n = KG_CHUNK;
	return kg_chunk_out(c, off, n, KG_CHUNK);
}

#if defined(__TARGET_ARCH_arm64)
/* kg_compat_regs says the syscall of regs came from AArch32. */
static __always_inline bool kg_compat_regs(struct pt_regs *regs)
{
	__u64 pstate = 0;

	kg_read(pstate, regs->pstate);
	return pstate & KG_PSR_MODE32_BIT;
}
#endif

/*
 * kg_native_nr maps a candidate syscall number of the syscall whose
 * registers are regs to the native number of a module syscall, or -1;
 * *compat says the caller is 32-bit.
 */
static __always_inline long kg_native_nr(long nr, struct pt_regs *regs, bool *compat)
{
	*compat = false;
#if defined(__TARGET_ARCH_x86)
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 status = 0;

	kg_read(status, task->thread_info.status);
	if (status & KG_TS_COMPAT) {
#elif defined(__TARGET_ARCH_arm64)
	if (kg_compat_regs(regs)) {
#endif
		*compat = true;
		switch (nr) {
		case KG_NR32_INIT_MODULE:
			return KG_NR_INIT_MODULE;
		case KG_NR32_FINIT_MODULE:
			return KG_NR_FINIT_MODULE;
		case KG_NR32_DELETE_MODULE:
			return KG_NR_DELETE_MODULE;
		}
		return -1;
	}
#if defined(__TARGET_ARCH_x86)
	nr &= ~KG_X32_SYSCALL_BIT;
#endif
	return KG_IS_MODULE_NR(nr) ? nr : -1;
}

static __always_inline int kg_enter(struct pt_regs *regs, long nr, bool compat)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 a0 = 0, a1 = 0, a2 = 0;
	struct kg_image_ctx img = {};
	struct kg_event *e;
	const char *uargs = NULL;
	__u64 ts = bpf_ktime_get_boot_ns();
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 coalesced = 0;
	bool may_load;

#if defined(__TARGET_ARCH_x86)
	if (compat) {
		/* ia32 arguments: ebx, ecx, edx, 32 bits each. */
		__u32 b = 0, c = 0, d = 0;

		kg_read(b, regs->bx);
		kg_read(c, regs->cx);
		kg_read(d, regs->dx);
		a0 = b;
		a1 = c;
		a2 = d;
	} else
#endif
	{
		kg_read(a0, KG_ARG0(regs));
		kg_read(a1, KG_ARG1(regs));
		kg_read(a2, KG_ARG2(regs));
	}
#if defined(__TARGET_ARCH_arm64)
	if (compat) {
		/* aarch32 arguments: r0, r1, r2, in the low 32 bits of x0, x1, x2. */
		a0 = (__u32)a0;
		a1 = (__u32)a1;
		a2 = (__u32)a2;
	}
#endif

	may_load = kg_may_load(task);
	if (!may_load && kg_throttle(ts, tid))
		return 0;
	if (nr == KG_NR_INIT_MODULE && may_load && kg_image_junk((const void *)a0, a1) &&
	    kg_junk(ts, tid, &coalesced))
		return 0;

	/* The image goes first, so that its event can say how it went. */
	if (nr == KG_NR_INIT_MODULE) {
		img.image = (const char *)a0;
		img.total = a1;
		img.ts = ts;
		img.tid = tid;
		if (img.total > kg_image_cap) {
			img.total = kg_image_cap;
			img.flags |= KG_F_IMAGE_TRUNCATED;
		}
		if (img.total && !may_load) {
			img.total = 0;
			img.flags |= KG_F_IMAGE_SKIPPED;
		}
		if (img.total)
			bpf_loop((img.total + KG_CHUNK - 1) / KG_CHUNK, kg_send_chunk, &img, 0);
	}

	e = kg_scratch();
	if (!e)
		return 0;
	kg_event_init(e, ts);
	e->coalesced = coalesced;

	switch (nr) {
	case KG_NR_INIT_MODULE:
		e->syscall = KG_SYS_INIT_MODULE;
		e->len = a1;
		e->captured = img.sent;
		e->flags |= img.flags;
		if (img.sent < img.total && !(img.flags & KG_F_IMAGE_DROPPED))
			e->flags |= KG_F_IMAGE_UNREADABLE;
		uargs = (const char *)a2;
		kg_read_params(e, uargs);
		break;
	case KG_NR_FINIT_MODULE:
		e->syscall = KG_SYS_FINIT_MODULE;
		e->fd = (int)a0;
		e->raw_flags = (__u32)a2;
		uargs = (const char *)a1;
		kg_read_params(e, uargs);
		kg_fill_file(e, task, (int)a0);
		break;
	default:
		e->syscall = KG_SYS_DELETE_MODULE;
		e->raw_flags = (__u32)a1;
		{
			/* The first segment: data_len is 0. */
			long n = bpf_probe_read_user_str(e->data, KG_MODNAME_MAX, (const char *)a0);

			if (n == 0) {
				/* An empty name, on kernels that return 0 for it (see kg_read_params). */
				e->data[0] = 0;
				n = 1;
			}
			if (n < 0) {
				e->flags |= KG_F_NAME_UNREADABLE;
			} else {
				e->name_len = n;
				e->data_len = n;
			}
			if (n == KG_MODNAME_MAX)
				e->flags |= KG_F_NAME_TRUNCATED;
		}
		break;
	}
	kg_fill_task(e, task);

	if (e->flags & (KG_F_IMAGE_TRUNCATED | KG_F_IMAGE_DROPPED | KG_F_PARAMS_TRUNCATED |
			KG_F_NAME_TRUNCATED | KG_F_PATH_TRUNCATED | KG_F_EXE_TRUNCATED |
			KG_F_CGROUP_TRUNCATED | KG_F_CMDLINE_TRUNCATED))
		kg_count(KG_CNT_TRUNCATIONS);
	if (e->flags & (KG_F_IMAGE_UNREADABLE | KG_F_PARAMS_UNREADABLE | KG_F_NAME_UNREADABLE |
			KG_F_CMDLINE_UNREADABLE))
		kg_count(KG_CNT_READ_FAILURES);
	if (bpf_ringbuf_output(&kg_events, e,
			       __builtin_offsetof(struct kg_event, data) + kg_segment(e, 0),
			       kg_wake(ts))) {
		kg_count(KG_CNT_DROPS);
		return 0;
	}
	kg_count(KG_CNT_EVENTS);
	/*
	 * An image or params that could not be read (not resident: a fresh
	 * mapping) are read again at sys_exit, once the kernel has copied
	 * them. Only for callers the kernel lets that far (img.total is 0 for
	 * the others); a NULL params pointer never becomes readable.
	 */
	if (may_load) {
		struct kg_retry r = { .ts = ts };

		if (nr == KG_NR_INIT_MODULE && (e->flags & KG_F_IMAGE_UNREADABLE) && img.total &&
		    !(img.flags & KG_F_IMAGE_DROPPED)) {
			r.image = (__u64)img.image;
			r.total = img.total;
		}
		if ((e->flags & KG_F_PARAMS_UNREADABLE) && uargs)
			r.params = (__u64)uargs;
		if (r.total || r.params)
			bpf_map_update_elem(&kg_retries, &tid, &r, BPF_ANY);
	}
	return 0;
}

/*
 * Autoload. request_module() asks user space (modprobe, through the
 * kernel.modprobe helper) for a module on behalf of the current task: a
 * socket of a family no module provides yet, an unknown file system type,
 * a device node without its driver. The module:module_request tracepoint
 * fires in the requester's context, before the helper starts, so the event
 * names who caused the load and what it asked for (an alias such as
 * net-pf-38 or fs-cramfs, which modprobe resolves to a module). It has no
 * result and no exit record.
 */
static __always_inline int kg_request(const char *name, bool wait)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct kg_event *e = kg_scratch();
	long n;

	if (!e)
		return 0;
	kg_event_init(e, bpf_ktime_get_boot_ns());
	e->syscall = KG_SYS_MODULE_REQUEST;
	e->raw_flags = wait;
	/* The first segment: data_len is 0. */
	n = bpf_probe_read_kernel_str(e->data, KG_MODNAME_MAX, name);
	if (n <= 0) {
		e->flags |= KG_F_NAME_UNREADABLE;
	} else {
		e->name_len = n;
		e->data_len = n;
		if (n == KG_MODNAME_MAX)
			e->flags |= KG_F_NAME_TRUNCATED;
	}
	kg_fill_task(e, task);
	if (bpf_ringbuf_output(&kg_events, e,
			       __builtin_offsetof(struct kg_event, data) + kg_segment(e, 0),
			       kg_wake(bpf_ktime_get_boot_ns()))) {
		kg_count(KG_CNT_DROPS);
		return 0;
	}
	kg_count(KG_CNT_EVENTS);
	return 0;
}

SEC("tp_btf/module_request")
int kg_module_request(__u64 *ctx)
{
	return kg_request((const char *)ctx[0], (bool)ctx[1]);
}

SEC("raw_tracepoint/module_request")
int kg_raw_module_request(struct bpf_raw_tracepoint_args *ctx)
{
	return kg_request((const char *)ctx->args[0], (bool)ctx->args[1]);
}

/*
 * The kernel's own module events. module:module_load fires once a module is
 * fully formed, its signature checked and its sysfs entries made, just
 * before its init function runs (state COMING); module:module_free fires
 * when it is freed (after delete_module, or when its init failed). Both run
 * in the task that loads or unloads it, only for those calls, so they cost
 * the rest of the system nothing. They carry what only the kernel knows:
 * the name it registered under, whether the signature was verified
 * (sig_ok, with CONFIG_MODULE_SIG) and its taints. No exit record follows.
 */
static __always_inline int kg_module_event(struct module *mod, __u8 kind)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct kg_event *e = kg_scratch();
	long n;

	if (!e || !mod)
		return 0;
	kg_event_init(e, bpf_ktime_get_boot_ns());
	e->syscall = kind;
	e->module = (__u64)mod;
	kg_read(e->taints, mod->taints);
	if (KG_FIELD_EXISTS(mod->sig_ok)) {
		bool ok = false;

		kg_read(ok, mod->sig_ok);
		e->flags |= KG_F_SIG_KNOWN;
		if (ok)
			e->flags |= KG_F_SIG_OK;
	}
	/* The first segment: data_len is 0. */
	n = bpf_probe_read_kernel_str(e->data, KG_MODNAME_MAX,
				      __builtin_preserve_access_index(&mod->name));
	if (n <= 0) {
		e->flags |= KG_F_NAME_UNREADABLE;
	} else {
		e->name_len = n;
		e->data_len = n;
	}
	kg_fill_task(e, task);
	if (bpf_ringbuf_output(&kg_events, e,
			       __builtin_offsetof(struct kg_event, data) + kg_segment(e, 0),
			       kg_wake(bpf_ktime_get_boot_ns()))) {
		kg_count(KG_CNT_DROPS);
		return 0;
	}
	kg_count(KG_CNT_EVENTS);
	return 0;
}

SEC("tp_btf/module_load")
int kg_module_load(__u64 *ctx)
{
	return kg_module_event((struct module *)ctx[0], KG_SYS_MODULE_LOAD);
}

SEC("tp_btf/module_free")
int kg_module_free(__u64 *ctx)
{
	return kg_module_event((struct module *)ctx[0], KG_SYS_MODULE_FREE);
}

SEC("raw_tracepoint/module_load")
int kg_raw_module_load(struct bpf_raw_tracepoint_args *ctx)
{
	return kg_module_event((struct module *)ctx->args[0], KG_SYS_MODULE_LOAD);
}

SEC("raw_tracepoint/module_free")
int kg_raw_module_free(struct bpf_raw_tracepoint_args *ctx)
{
	return kg_module_event((struct module *)ctx->args[0], KG_SYS_MODULE_FREE);
}

static __always_inline int kg_exit(long nr, long ret)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct kg_image_ctx img = {};
	struct kg_retry *r = NULL;
	const char *uargs = NULL;
	struct kg_exit *x;
	__u32 key = 0;
	__u64 len = 0, size;

	/* The exit of a throttled or folded call goes the way of its enter. */
	if (((kg_unprivileged_rate && !kg_may_load(task)) || nr == KG_NR_INIT_MODULE) &&
	    bpf_map_delete_elem(&kg_throttled_tids, &tid) == 0)
		return 0;
	x = bpf_map_lookup_elem(&kg_exit_buf, &key);
	if (!x)
		return 0;
	if (nr == KG_NR_INIT_MODULE || nr == KG_NR_FINIT_MODULE)
		r = bpf_map_lookup_elem(&kg_retries, &tid);
	if (r) {
		img.image = (const char *)r->image;
		img.total = r->total;
		img.ts = r->ts;
		img.tid = tid;
		uargs = (const char *)r->params;
		bpf_map_delete_elem(&kg_retries, &tid);
		if (img.total > kg_image_cap)
			img.total = kg_image_cap;
		if (img.total) {
			bpf_loop((img.total + KG_CHUNK - 1) / KG_CHUNK, kg_send_chunk, &img, 0);
			if (img.sent == img.total)
				img.flags |= KG_F_IMAGE_AT_EXIT;
			else if (!(img.flags & KG_F_IMAGE_DROPPED))
				img.flags |= KG_F_IMAGE_UNREADABLE;
		}
		if (uargs) {
			long n = kg_params_str(x->params, uargs, &img.flags);

			if (n > 0 && n <= KG_PARAMS_MAX) {
				len = n;
				img.flags |= KG_F_PARAMS_AT_EXIT;
			} else {
				img.flags |= KG_F_PARAMS_UNREADABLE;
			}
		}
	}
	x->kind = KG_REC_EXIT;
	x->syscall = nr == KG_NR_INIT_MODULE    ? KG_SYS_INIT_MODULE
		     : nr == KG_NR_FINIT_MODULE ? KG_SYS_FINIT_MODULE
						: KG_SYS_DELETE_MODULE;
	x->pad = 0;
	x->tid = tid;
	x->ret = ret;
	x->flags = img.flags;
	x->params_len = len;
	x->pad2 = 0;
	x->captured = img.sent;
	/* Bounded in 64 bits, where the verifier sees it (6.1 and 6.12 lose a 32-bit bound). */
	size = __builtin_offsetof(struct kg_exit, params) + len;
	barrier_var(size);
	if (size > sizeof(*x))
		size = sizeof(*x);
	if (bpf_ringbuf_output(&kg_events, x, size, kg_wake(bpf_ktime_get_boot_ns())))
		kg_count(KG_CNT_EXIT_DROPS);
	return 0;
}

/* The default hooks: tp_btf, where ctx and pt_regs are read directly. */

SEC("tp_btf/sys_enter")
int kg_sys_enter(__u64 *ctx)
{
	long nr = (long)ctx[1];
	bool compat;

	if (!KG_IS_CANDIDATE_NR(nr))
		return 0;
	nr = kg_native_nr(nr, (struct pt_regs *)ctx[0], &compat);
	if (nr < 0)
		return 0;
	return kg_enter((struct pt_regs *)ctx[0], nr, compat);
}

SEC("tp_btf/sys_exit")
int kg_sys_exit(__u64 *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	long nr = KG_SYSCALL_NR(regs);
	bool compat;

	if (!KG_IS_CANDIDATE_NR(nr))
		return 0;
	nr = kg_native_nr(nr, regs, &compat);
	if (nr < 0)
		return 0;
	return kg_exit(nr, (long)ctx[1]);
}

/* The fallback hooks: plain raw tracepoints, for kernels that refuse tp_btf. */

SEC("raw_tracepoint/sys_enter")
int kg_raw_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	long nr = (long)ctx->args[1];
	bool compat;

	if (!KG_IS_CANDIDATE_NR(nr))
		return 0;
	nr = kg_native_nr(nr, (struct pt_regs *)ctx->args[0], &compat);
	if (nr < 0)
		return 0;
	return kg_enter((struct pt_regs *)ctx->args[0], nr, compat);
}

SEC("raw_tracepoint/sys_exit")
int kg_raw_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	typeof(KG_SYSCALL_NR(regs)) raw = -1;
	long nr;
	bool compat;

	kg_read(raw, KG_SYSCALL_NR(regs));
	nr = (long)raw;
	if (!KG_IS_CANDIDATE_NR(nr))
		return 0;
	nr = kg_native_nr(nr, regs, &compat);
	if (nr < 0)
		return 0;
	return kg_exit(nr, (long)ctx->args[1]);
}

/*
 * The fentry mode: fentry/fexit on the three syscall functions themselves,
 * where the kernel allows it. Other syscalls then pay nothing at all. Not
 * the default: BPF tracing programs are refused on some hosts (lockdown,
 * no direct calls), and the tracepoints are the fallback.
 */
#if defined(__TARGET_ARCH_x86)
#define KG_SYSCALL_FUNC(name) "__x64_sys_" #name
#define KG_FENTRY_NATIVE_COMPAT false
#else
#define KG_SYSCALL_FUNC(name) "__arm64_sys_" #name
/*
 * arm64 has no compat wrappers for the three: its compat syscall table
 * (arch/arm64/kernel/sys32.c) points 128, 129 and 379 at the native
 * __arm64_sys_ functions, so the native fentry programs see aarch32 callers
 * too, and ask the syscall's registers which kind of caller it is (ctx is
 * the fentry program's: its first argument is the syscall's pt_regs).
 */
#define KG_FENTRY_NATIVE_COMPAT kg_compat_regs((struct pt_regs *)ctx[0])
#endif

#define KG_FENTRY_PAIR(prefix, func, name, nr, compat)                 \
	SEC("fentry/" func)                                            \
	int kg_##prefix##fentry_##name(__u64 *ctx)                     \
	{                                                              \
		return kg_enter((struct pt_regs *)ctx[0], nr, compat); \
	}                                                              \
	SEC("fexit/" func)                                             \
	int kg_##prefix##fexit_##name(__u64 *ctx)                      \
	{                                                              \
		return kg_exit(nr, (long)ctx[1]);                      \
	}

KG_FENTRY_PAIR(, KG_SYSCALL_FUNC(init_module), init_module, KG_NR_INIT_MODULE,
	       KG_FENTRY_NATIVE_COMPAT)
KG_FENTRY_PAIR(, KG_SYSCALL_FUNC(finit_module), finit_module, KG_NR_FINIT_MODULE,
	       KG_FENTRY_NATIVE_COMPAT)
KG_FENTRY_PAIR(, KG_SYSCALL_FUNC(delete_module), delete_module, KG_NR_DELETE_MODULE,
	       KG_FENTRY_NATIVE_COMPAT)

#if defined(__TARGET_ARCH_x86)
/* 32-bit callers enter through the __ia32_sys_ wrappers (IA32 emulation). */
KG_FENTRY_PAIR(ia32_, "__ia32_sys_init_module", init_module, KG_NR_INIT_MODULE, true)
KG_FENTRY_PAIR(ia32_, "__ia32_sys_finit_module", finit_module, KG_NR_FINIT_MODULE, true)
KG_FENTRY_PAIR(ia32_, "__ia32_sys_delete_module", delete_module, KG_NR_DELETE_MODULE, true)
#endif
