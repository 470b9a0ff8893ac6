//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * guard.bpf.c: kmodguard's BPF LSM guard.
 *
 * It decides every kernel module load on the kernel's own copy of the image:
 *
 *   init_module   -> lsm/kernel_post_load_data  (id LOADING_MODULE)
 *   finit_module  -> lsm/kernel_post_read_file  (id READING_MODULE)
 *
 * For each load it computes the SHA-256 of the buffer (sha256.h) and parses
 * both module names from the ELF (elf.h), looks them up in the policy and
 * returns 0 or -EPERM. Loads whose contents the kernel will not show us
 * (kernel_load_data / kernel_read_file with contents == false) are refused
 * in enforce mode. A read or load id the guard does not know is decided
 * as a module (readid.h). Every other id (firmware, IMA policy, x509 ...)
 * passes untouched, except the kexec ids once the guard is sealed.
 *
 * Autoload: lsm/kernel_module_request refuses the kernel's own module
 * requests (request_module, in the requesting process's context) whose
 * alias matches a pattern of the allowlist's spec.autoload.deny (glob.h),
 * so that the kernel never runs modprobe for them. What modprobe then
 * loads, and any load by name from user space, is decided as above.
 *
 * Policy: kg_policy is an ARRAY_OF_MAPS with one slot. The slot holds one
 * hash map with the mode, the digests and the names of one allowlist. User
 * space builds a complete new inner map and swaps it into the slot with one
 * update, so a load sees either the old allowlist or the new one, whole.
 *
 * Seal: once kg_config.sealed is set, the bpf, bpf_map, bpf_prog, inode_*,
 * sb_umount, sb_mount, move_mount, sb_pivotroot and kexec hooks refuse root
 * every way to detach, unpin, move, override or rewrite the guard, or to
 * boot into another kernel, until reboot. Writes to the config map are themselves
 * refused then, so the seal cannot be lifted.
 */
#include "vmlinux.h"
/*
 * Decisions under way on one CPU at once, each with scratch of its own: on
 * a preemptible kernel (preempt=full or lazy, the only models of recent
 * x86 kernels, PREEMPT_RT) a load can preempt another mid-decision, as
 * udev's parallel workers do at boot. Only when every slot is taken is a
 * load refused (see decide_load).
 */
#define KG_SCRATCH_SLOTS 8
#include "sha256.h"
#include "elf.h"
#include "decide.h"
#include "glob.h"
#include "readid.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* What a decision event is about. */
enum kg_op {
	KG_OP_INIT_MODULE = 1,
	KG_OP_FINIT_MODULE = 2,
	KG_OP_BPF = 3,
	KG_OP_UNLINK = 4,
	KG_OP_RENAME = 5,
	KG_OP_UMOUNT = 6,
	KG_OP_KEXEC = 7,
	KG_OP_MOUNT = 8,
	KG_OP_MODULE_REQUEST = 9, /* autoload request (request_module) */
};

/*
 * The guard's configuration. Only sealed steers the programs; mode,
 * generation and entries mirror the policy in force for status readers.
 */
struct kg_config {
	__u32 sealed;
	__u32 mode;
	__u64 generation;
	__u64 entries;
};

/*
 * Objects the seal protects: map ids, link ids, pinned inodes, the mounts
 * holding the pins (by mount id, and the inodes they sit on), and the
 * decision ring buffer. KG_PROT_EVENTS is kept apart from KG_PROT_MAP:
 * no program may use the ring buffer once sealed, but the daemon still
 * opens it writable, because consuming records needs a writable mapping.
 */
#define KG_PROT_MAP 1
#define KG_PROT_LINK 2
#define KG_PROT_INODE 3
/* 4 was the superblocks of the mounts above the pins (now mount ids). */
#define KG_PROT_EVENTS 5
#define KG_PROT_MOUNT 6      /* id: mnt_id of a mount from / down to the pins */
#define KG_PROT_MOUNTPOINT 7 /* dev, id: inode the mount sits on */
/*
 * id: vmlinux BTF id of a bpf_lsm_<hook> function where a BPF LSM program
 * of anyone else could skip the guard: a positive return from
 * kernel_post_read_file is taken for the file's length (the load goes on,
 * no later LSM asked), from bpf, bpf_map and bpf_prog for "allowed".
 * Recorded only on kernels that let LSM programs return any value (before
 * 6.12). Once sealed, no program attaching there gets a descriptor or a
 * link.
 */
#define KG_PROT_HOOK 8
/* id: inum of a mount namespace holding protected mounts (kg_sb_mount). */
#define KG_PROT_MNTNS 9
/* dev, id: a directory on the path from / to the pins, as lookup ends on it. */
#define KG_PROT_PATH 10
/*
 * id: vmlinux BTF id of a bpf_lsm_<hook> function (the KG_PROT_HOOK ones)
 * where no BPF_LSM_CGROUP program may go once sealed: the verifier keeps
 * such a program's own return to 0 or 1, but the value it sets with
 * bpf_set_retval is the hook's. Recorded only on kernels that do not check
 * that value (6.1 and 6.12; 7.2 does).
 */
#define KG_PROT_CGROUP_HOOK 11

struct kg_protect_key {
	__u32 kind;
	__u32 dev;
	__u64 id;
};

/*
 * The maps the programs only read are created BPF_F_RDONLY_PROG: the
 * verifier then refuses a program write to them by any path, including an
 * attacker's own map-of-maps holding a read-only fd to one of them (the
 * seal only sees the maps a program names directly). User space still
 * writes them through its fds until the seal.
 */

/* 0 -> seal state. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_RDONLY_PROG);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kg_config);
} kg_cfg SEC(".maps");

/*
 * Protected object -> 1, consulted only once sealed. The seal fills it with
 * the guard's maps and links, the pins, and for each namespace it acts on
 * (the sealing one and the host's) the mounts, mountpoints and directories
 * on the path to the pins, and before 6.12 the override hooks: 64 entries
 * were full on 6.1 sealed from a private mount namespace. A pinned guard
 * keeps the size it was loaded with (adopt).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_RDONLY_PROG);
	__uint(max_entries, 256);
	__type(key, struct kg_protect_key);
	__type(value, __u8);
} kg_protect SEC(".maps");

/*
 * Decision events for user space. Once sealed no program may use it
 * (KG_PROT_EVENTS); a reader other than the daemon can still consume
 * records, which the daemon detects against kg_counters.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} kg_events SEC(".maps");

/* Scratch for one decision (the event is too big for the stack), per slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KG_SCRATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct kg_event);
} kg_scratch SEC(".maps");

/* slot -> 1 while a decision uses that slot of this CPU's scratch maps (decide_load). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KG_SCRATCH_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} kg_busy SEC(".maps");

/* Scratch for the names parsed by elf.h, per slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KG_SCRATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct kg_elf_names);
} kg_names SEC(".maps");

/*
 * Counters by verdict, for status: 0 allowed, 1 blocked, 2 audit, 3 lost
 * events. Every decision is counted before its record is written, so the
 * records written are 0 + 1 + 2 - 3; the daemon checks what it read
 * against that.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} kg_counters SEC(".maps");

#define FMODE_WRITE 0x2

/* enum bpf_cmd (UAPI) */
#define BPF_MAP_UPDATE_ELEM 2
#define BPF_MAP_DELETE_ELEM 3
#define BPF_PROG_LOAD 5
#define BPF_PROG_ATTACH 8
#define BPF_PROG_DETACH 9
#define BPF_MAP_LOOKUP_AND_DELETE_ELEM 21
#define BPF_MAP_FREEZE 22
#define BPF_MAP_LOOKUP_AND_DELETE_BATCH 25
#define BPF_MAP_UPDATE_BATCH 26
#define BPF_MAP_DELETE_BATCH 27
#define BPF_LINK_CREATE 28
#define BPF_LINK_UPDATE 29
#define BPF_RAW_TRACEPOINT_OPEN 17
#define BPF_LINK_DETACH 34

/* UAPI values for the fmod_ret, LSM and freplace program checks. */
#define BPF_PROG_TYPE_TRACING 26
#define BPF_PROG_TYPE_EXT 28
#define BPF_PROG_TYPE_LSM 29
#define BPF_MODIFY_RETURN 26
#define BPF_LSM_MAC 27
#define BPF_TRACE_ITER 28
#define BPF_LSM_CGROUP 43
#define BPF_STRUCT_OPS 44

static __always_inline bool sealed(void)
{
	__u32 zero = 0;
	struct kg_config *c = bpf_map_lookup_elem(&kg_cfg, &zero);

	/* No config means the guard is being set up: not sealed. */
	return c && c->sealed;
}

static __always_inline bool protected(__u32 kind, __u32 dev, __u64 id)
{
	struct kg_protect_key k = { .kind = kind, .dev = dev, .id = id };

	return bpf_map_lookup_elem(&kg_protect, &k) != NULL;
}

static __always_inline void count(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&kg_counters, &slot);

	if (n)
		*n += 1;
}

/* fill_context zeroes e and records who and when. */
static __always_inline void fill_context(struct kg_event *e)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	__builtin_memset(e, 0, sizeof(*e));
	e->ts_boot = bpf_ktime_get_boot_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/*
 * scratch returns this CPU's decision record of a slot. Only decide() uses
 * it, and only once it owns the slot in kg_busy (see decide_load()), with
 * the same slot of the scratch of sha256.h and elf.h.
 */
static __always_inline struct kg_event *scratch(__u32 slot)
{
	struct kg_event *e = bpf_map_lookup_elem(&kg_scratch, &slot);

	if (e)
		fill_context(e);
	return e;
}

/* emit sends the event and returns its verdict as the hook's result. */
static __always_inline int emit(struct kg_event *e)
{
	int ret = e->verdict == KG_VERDICT_BLOCKED ? -EPERM : 0;

	e->ret = ret;
	count(e->verdict - 1);
	if (bpf_ringbuf_output(&kg_events, e, sizeof(*e), 0))
		count(3);
	return ret;
}

/*
 * report sends a decision that needs no scratch (seal refusals, loads
 * without contents, loads that met a busy CPU) straight into the ring
 * buffer, so that it can never clobber a decision in progress on this CPU.
 * It returns the hook's result for verdict.
 */
static __always_inline int report(__u16 op, __u8 verdict, __u8 reason, __u32 flags, __u64 object,
				  __u64 size, __u64 gen)
{
	int ret = verdict == KG_VERDICT_BLOCKED ? -EPERM : 0;
	struct kg_event *e;

	count(verdict - 1);
	e = bpf_ringbuf_reserve(&kg_events, sizeof(*e), 0);
	if (!e) {
		count(3);
		return ret;
	}
	fill_context(e);
	e->op = op;
	e->verdict = verdict;
	e->reason = reason;
	e->flags = flags;
	e->object = object;
	e->size = size;
	e->generation = gen;
	e->ret = ret;
	bpf_ringbuf_submit(e, 0);
	return ret;
}

/* refuse reports and refuses one seal bypass. */
static __always_inline int refuse(__u16 op, __u64 object)
{
	return report(op, KG_VERDICT_BLOCKED, KG_REASON_SEALED, KG_F_SEALED, object, 0, 0);
}

/*
 * foreign_caller reports whether the current task runs outside the initial
 * user namespace (its credentials') or the initial PID namespace: in a
 * container, as far as namespaces tell (the sensor's host_ns, negated). A
 * task whose namespaces cannot be read counts as foreign.
 */
static __always_inline bool foreign_caller(void)
{
	struct task_struct___guard *task = (void *)bpf_get_current_task();
	const struct cred *cred = NULL;
	struct user_namespace *userns = NULL;
	struct pid *pid = NULL;
	unsigned int pid_level = 1;
	int user_level = 1;

	kg_read(cred, task->cred);
	if (cred)
		kg_read(userns, cred->user_ns);
	if (userns)
		kg_read(user_level, userns->level);
	kg_read(pid, task->thread_pid);
	if (pid)
		kg_read(pid_level, pid->level);
	return user_level != 0 || pid_level != 0;
}

/*
 * decide fills e with the verdict for one module image in the kernel buffer
 * buf of size bytes, and returns the hook's result. The judgement itself is
 * decide.h's, which lsm/bpftest runs with BPF_PROG_TEST_RUN against
 * allowlist.Match.
 */
static __always_inline int decide(struct kg_event *e, const char *buf, __u64 size, __u32 slot)
{
	__u32 zero = 0;

	if (sealed())
		e->flags |= KG_F_SEALED;
	if (foreign_caller())
		e->flags |= KG_F_FOREIGN;
	kg_measure(e, buf, size, bpf_map_lookup_elem(&kg_names, &slot), slot);
	kg_judge(e, bpf_map_lookup_elem(&kg_policy, &zero));
	return emit(e);
}

/* policy_mode returns the mode in force; with no policy, enforce. */
static __always_inline __u32 policy_mode(__u64 *generation)
{
	struct kg_policy_key key = { .kind = KG_KEY_META };
	struct kg_policy_val *meta;
	__u32 zero = 0;
	void *policy;

	policy = bpf_map_lookup_elem(&kg_policy, &zero);
	if (!policy)
		return KG_MODE_ENFORCE;
	meta = bpf_map_lookup_elem(policy, &key);
	if (!meta)
		return KG_MODE_ENFORCE;
	*generation = meta->generation;
	return meta->mode;
}

/* verdict_for_refusal is blocked in enforce mode, audit in audit mode. */
static __always_inline __u8 verdict_for_refusal(__u64 *gen)
{
	return policy_mode(gen) == KG_MODE_AUDIT ? KG_VERDICT_AUDIT : KG_VERDICT_BLOCKED;
}

/* no_contents decides a module load whose bytes the kernel will not show. */
static __always_inline int no_contents(__u16 op)
{
	__u64 gen = 0;
	__u8 v = verdict_for_refusal(&gen);

	return report(op, v, KG_REASON_NO_CONTENTS, sealed() ? KG_F_SEALED : 0, 0, 0, gen);
}

/*
 * decide_load runs one decision with a slot of this CPU's scratch. The
 * scratch is per-CPU and a non-sleepable program can still be preempted on
 * a preemptible kernel, so a second load on the same CPU could interleave
 * and mix two images' digests and names. kg_busy marks each slot taken: a
 * load claims the first free slot with one compare-and-swap (with a
 * separate check and set, two loads preempted between them would both
 * claim a slot, decide on each other's data, and the first release would
 * clear the second's claim), and only the owner releases it. A load that
 * finds all KG_SCRATCH_SLOTS taken is refused (fail closed; audit in audit
 * mode) without touching them.
 */
static __always_inline int decide_load(__u16 op, const char *buf, __u64 size)
{
	__u32 *busy = NULL;
	struct kg_event *e;
	__u64 gen = 0;
	__u32 slot = KG_SCRATCH_SLOTS;
	int ret;

	/*
	 * Unrolled: older verifiers (6.1, 6.12) take the rolled loop, whose
	 * state repeats at its head, for an infinite one.
	 */
#pragma clang loop unroll(full)
	for (__u32 i = 0; i < KG_SCRATCH_SLOTS; i++) {
		if (slot == KG_SCRATCH_SLOTS) {
			__u32 k = i;
			__u32 *b = bpf_map_lookup_elem(&kg_busy, &k);

			if (b && __sync_val_compare_and_swap(b, 0, 1) == 0) {
				busy = b;
				slot = i;
			}
		}
	}
	if (!busy || slot >= KG_SCRATCH_SLOTS) {
		__u8 v = verdict_for_refusal(&gen);

		return report(op, v, KG_REASON_BUSY, sealed() ? KG_F_SEALED : 0, 0, size, gen);
	}
	e = scratch(slot);
	if (!e) {
		*busy = 0;
		return -EPERM;
	}
	e->op = op;
	ret = decide(e, buf, size, slot);
	*busy = 0;
	return ret;
}

/* ---- module loads --------------------------------------------------- */

SEC("lsm/kernel_post_load_data")
int kg_post_load_data(__u64 *ctx)
{
	const char *buf = (const char *)ctx[0];
	__u64 size = ctx[1];
	__u32 id = (__u32)ctx[2];

	/* An id not known here is decided as a module (readid.h). */
	if (kg_load_kind(id) != KG_READ_MODULE)
		return 0;
	return decide_load(KG_OP_INIT_MODULE, buf, size);
}

SEC("lsm/kernel_post_read_file")
int kg_post_read_file(__u64 *ctx)
{
	const char *buf = (const char *)ctx[1];
	__u64 size = ctx[2];
	__u32 id = (__u32)ctx[3];

	/* A compressed file is decided on its decompressed image, shown
	 * next as READING_MODULE; an id not known here, as a module. */
	if (kg_read_kind(id) != KG_READ_MODULE)
		return 0;
	return decide_load(KG_OP_FINIT_MODULE, buf, size);
}

SEC("lsm/kernel_load_data")
int kg_load_data(__u64 *ctx)
{
	__u32 id = (__u32)ctx[0];
	bool contents = (bool)ctx[1];

	if (kg_load_kind(id) != KG_READ_OTHER)
		return contents ? 0 : no_contents(KG_OP_INIT_MODULE);
	if ((id == kg_enum_value(enum kernel_load_data_id, LOADING_KEXEC_IMAGE) ||
	     id == kg_enum_value(enum kernel_load_data_id, LOADING_KEXEC_INITRAMFS)) &&
	    sealed())
		return refuse(KG_OP_KEXEC, id);
	return 0;
}

SEC("lsm/kernel_read_file")
int kg_read_file(__u64 *ctx)
{
	__u32 id = (__u32)ctx[1];
	bool contents = (bool)ctx[2];

	if (kg_read_kind(id) != KG_READ_OTHER)
		return contents ? 0 : no_contents(KG_OP_FINIT_MODULE);
	if ((id == kg_enum_value(enum kernel_read_file_id, READING_KEXEC_IMAGE) ||
	     id == kg_enum_value(enum kernel_read_file_id, READING_KEXEC_INITRAMFS)) &&
	    sealed())
		return refuse(KG_OP_KEXEC, id);
	return 0;
}

/* ---- autoload requests --------------------------------------------- */

/*
 * kernel_module_request(kmod_name): the kernel is about to run modprobe
 * for kmod_name (an alias such as net-pf-38 or fs-cramfs, at most
 * MODULE_NAME_LEN bytes), on behalf of the current task. A request whose
 * alias matches a deny pattern of the policy in force is refused (-EPERM:
 * no modprobe runs, the caller's socket or mount fails as if no module
 * provided it), or let through in audit mode, and reported with the alias
 * in name and the pattern in entry. Other requests pass unreported (the
 * sensor reports every request). An alias that cannot be read is refused
 * when a deny list is in force. Without a policy nothing is refused here:
 * every load that could follow is.
 */
SEC("lsm/kernel_module_request")
int kg_module_request(__u64 *ctx)
{
	const char *kmod_name = (const char *)ctx[0];
	struct kg_policy_key key = { .kind = KG_KEY_META };
	struct kg_glob_str alias = {};
	struct kg_policy_val *meta, *pat;
	struct kg_event *e;
	__u32 zero = 0;
	__u8 verdict;
	void *policy;
	int ret;

	policy = bpf_map_lookup_elem(&kg_policy, &zero);
	if (!policy)
		return 0;
	meta = bpf_map_lookup_elem(policy, &key);
	if (!meta)
		return 0;
	if (bpf_probe_read_kernel_str(alias.s, sizeof(alias.s), kmod_name) < 0) {
		/* unreadable: denied when any pattern is in force */
		key.kind = KG_KEY_AUTOLOAD;
		key.data[0] = 0;
		if (!bpf_map_lookup_elem(policy, &key))
			return 0;
		pat = NULL;
	} else {
		pat = kg_autoload_denied(policy, &alias);
		if (!pat)
			return 0;
	}
	verdict = meta->mode == KG_MODE_AUDIT ? KG_VERDICT_AUDIT : KG_VERDICT_BLOCKED;
	ret = verdict == KG_VERDICT_BLOCKED ? -EPERM : 0;
	count(verdict - 1);
	e = bpf_ringbuf_reserve(&kg_events, sizeof(*e), 0);
	if (!e) {
		count(3);
		return ret;
	}
	fill_context(e);
	e->op = KG_OP_MODULE_REQUEST;
	e->verdict = verdict;
	e->reason = KG_REASON_AUTOLOAD_DENIED;
	e->flags = sealed() ? KG_F_SEALED : 0;
	e->generation = meta->generation;
	e->ret = ret;
	__builtin_memcpy(e->name, alias.s, sizeof(alias.s));
	if (pat)
		__builtin_memcpy(e->entry, pat->name, sizeof(e->entry));
	bpf_ringbuf_submit(e, 0);
	return ret;
}

/* ---- seal ----------------------------------------------------------- */

/* fd_private returns file->private_data of the caller's descriptor fd. */
static __always_inline void *fd_private(__s32 fd)
{
	struct task_struct___guard *task = (void *)bpf_get_current_task();
	struct files_struct___guard *files = NULL;
	struct fdtable___guard *fdt = NULL;
	struct file___guard **fds = NULL, *file = NULL;
	unsigned int max = 0;
	void *priv = NULL;

	if (fd < 0)
		return NULL;
	kg_read(files, task->files);
	if (!files)
		return NULL;
	kg_read(fdt, files->fdt);
	if (!fdt)
		return NULL;
	kg_read(max, fdt->max_fds);
	if ((unsigned int)fd >= max)
		return NULL;
	kg_read(fds, fdt->fd);
	if (!fds)
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return NULL;
	kg_read(priv, file->private_data);
	return priv;
}

static __always_inline bool fd_is_guard_map(__s32 fd, __u32 *id)
{
	struct bpf_map___guard *map = fd_private(fd);

	*id = 0;
	if (!map)
		return false;
	kg_read(*id, map->id);
	return protected(KG_PROT_MAP, 0, *id);
}

/* fd_is_events: fd is the decision ring buffer (KG_PROT_EVENTS). */
static __always_inline bool fd_is_events(__s32 fd, __u32 *id)
{
	struct bpf_map___guard *map = fd_private(fd);

	*id = 0;
	if (!map)
		return false;
	kg_read(*id, map->id);
	return protected(KG_PROT_EVENTS, 0, *id);
}

static __always_inline bool fd_is_guard_link(__s32 fd, __u32 *id)
{
	struct bpf_link___guard *link = fd_private(fd);

	*id = 0;
	if (!link)
		return false;
	kg_read(*id, link->id);
	return protected(KG_PROT_LINK, 0, *id);
}

/*
 * is_lsm_prog: prog is a BPF LSM program (the guard's own, or anyone's),
 * whose code an extension (freplace) would replace.
 */
static __always_inline bool is_lsm_prog(struct bpf_prog___guard *prog)
{
	__u32 type = 0;

	if (!prog)
		return false;
	kg_read(type, prog->type);
	return type == BPF_PROG_TYPE_LSM;
}

/*
 * prog_overrides: prog could decide a load, or a bpf() call, before the
 * guard, and so skip it: an fmod_ret program (on a security_ function it
 * can return anything, and 0 is not what makes it dangerous: a positive
 * return from security_kernel_post_read_file is taken for the file's
 * length), an LSM program on a KG_PROT_HOOK hook, a BPF_LSM_CGROUP
 * program on a KG_PROT_CGROUP_HOOK hook (its bpf_set_retval value is the
 * hook's return), or an extension (freplace) loaded to replace code of
 * any LSM program (the kernel refuses to extend the guard's own today; an
 * extension's return is never checked against the hook's values).
 */
static __always_inline bool prog_overrides(struct bpf_prog___guard *prog, __u64 *what)
{
	struct bpf_prog_aux___guard *aux = NULL;
	struct bpf_prog___guard *dst = NULL;
	__u32 type = 0, eat = 0, btf_id = 0;

	if (!prog)
		return false;
	kg_read(type, prog->type);
	kg_read(eat, prog->expected_attach_type);
	if (type == BPF_PROG_TYPE_TRACING && eat == BPF_MODIFY_RETURN) {
		*what = 0;
		return true;
	}
	if (type != BPF_PROG_TYPE_LSM && type != BPF_PROG_TYPE_EXT)
		return false;
	kg_read(aux, prog->aux);
	if (!aux)
		return true; /* fail closed */
	if (type == BPF_PROG_TYPE_EXT) {
		/*
		 * The target it was loaded for, until its first attach (then
		 * the kernel clears it, and a new attach must name a target:
		 * kg_bpf checks that one).
		 */
		kg_read(dst, aux->dst_prog);
		*what = 0;
		return is_lsm_prog(dst);
	}
	kg_read(btf_id, aux->attach_btf_id);
	*what = btf_id;
	if (eat == BPF_LSM_CGROUP)
		return protected(KG_PROT_CGROUP_HOOK, 0, btf_id);
	if (eat != BPF_LSM_MAC)
		return false;
	return protected(KG_PROT_HOOK, 0, btf_id);
}

/*
 * ext_attach_overrides: prog, attached with BPF_LINK_CREATE to the
 * program behind target_fd (0: the one it was loaded for), is an extension
 * of an LSM program.
 */
static __always_inline bool ext_attach_overrides(struct bpf_prog___guard *prog, __u32 target_fd)
{
	__u32 type = 0;
	__u64 what = 0;

	if (!prog)
		return false;
	kg_read(type, prog->type);
	if (type != BPF_PROG_TYPE_EXT)
		return false;
	if (target_fd == 0)
		return prog_overrides(prog, &what);
	return is_lsm_prog(fd_private(target_fd));
}

/*
 * bpf(cmd, attr, size): refuse, once sealed, writes to the guard's maps
 * through descriptors opened before the seal (which the kernel refuses
 * too: the seal freezes them), the freeze of its ring
 * buffer, the detach of its links, loading fmod_ret programs, and attaching
 * any program that could decide before the guard (prog_overrides): with
 * BPF_LINK_CREATE, BPF_RAW_TRACEPOINT_OPEN, or BPF_PROG_ATTACH to a cgroup
 * (BPF_LSM_CGROUP), and extensions of LSM programs.
 */
SEC("lsm/bpf")
int kg_bpf(__u64 *ctx)
{
	int cmd = (int)ctx[0];
	const void *attr = (const void *)ctx[1];
	__u32 fd = 0, id = 0, a = 0, b = 0;

	if (!sealed())
		return 0;
	switch (cmd) {
	case BPF_MAP_UPDATE_ELEM:
	case BPF_MAP_DELETE_ELEM:
	case BPF_MAP_LOOKUP_AND_DELETE_ELEM:
		/*
		 * map_fd is the first field. The syscall looks the fd up again
		 * after this hook: a thread that swaps the fd in between gets
		 * past this check. The seal also freezes every guard map, so
		 * the kernel itself refuses such a write; this check is the
		 * second line, and the one that reports.
		 */
		bpf_probe_read_kernel(&fd, sizeof(fd), attr);
		if (fd_is_guard_map(fd, &id))
			return refuse(KG_OP_BPF, ((__u64)cmd << 32) | id);
		return 0;
	case BPF_MAP_FREEZE:
		/*
		 * Freezing a guard map takes away only what the seal already
		 * refuses (writes from user space), and the seal freezes its
		 * config once sealed: allowed. A frozen ring buffer, though,
		 * cannot be mapped writable: no daemon started after the freeze
		 * could consume the decisions.
		 */
		bpf_probe_read_kernel(&fd, sizeof(fd), attr);
		if (fd_is_events(fd, &id))
			return refuse(KG_OP_BPF, ((__u64)cmd << 32) | id);
		return 0;
	case BPF_MAP_LOOKUP_AND_DELETE_BATCH:
	case BPF_MAP_UPDATE_BATCH:
	case BPF_MAP_DELETE_BATCH:
		/* batch.map_fd follows in_batch, out_batch, keys, values, count */
		bpf_probe_read_kernel(&fd, sizeof(fd), (const char *)attr + 36);
		if (fd_is_guard_map(fd, &id))
			return refuse(KG_OP_BPF, ((__u64)cmd << 32) | id);
		return 0;
	case BPF_LINK_DETACH:
	case BPF_LINK_UPDATE:
		/* link_fd is the first field */
		bpf_probe_read_kernel(&fd, sizeof(fd), attr);
		if (fd_is_guard_link(fd, &id))
			return refuse(KG_OP_BPF, ((__u64)cmd << 32) | id);
		return 0;
	case BPF_LINK_CREATE:
		/*
		 * An iterator over a map's elements may write them, whatever the
		 * map fd's mode. iter_info is user memory the kernel reads after
		 * this hook, so it cannot be checked here: once sealed, iterator
		 * links with a target (map, cgroup, task) are refused; plain
		 * iterators (tasks, maps as objects) still work.
		 */
		bpf_probe_read_kernel(&a, sizeof(a), (const char *)attr + 8);  /* attach_type */
		bpf_probe_read_kernel(&b, sizeof(b), (const char *)attr + 24); /* iter_info_len */
		if (a == BPF_TRACE_ITER && b != 0)
			return refuse(KG_OP_BPF, (__u64)cmd << 32);
		/*
		 * A program that overrides the guard, loaded before the seal and
		 * held by fd since, is not attached after it. prog_fd is the
		 * first field; attach_type says it is a program's fd (for
		 * struct_ops it is a map's).
		 */
		if (a == BPF_MODIFY_RETURN || a == BPF_LSM_MAC || a == BPF_LSM_CGROUP) {
			__u64 what = 0;

			bpf_probe_read_kernel(&fd, sizeof(fd), attr);
			if (prog_overrides(fd_private(fd), &what))
				return refuse(KG_OP_BPF, ((__u64)cmd << 32) | (__u32)what);
		}
		/*
		 * An extension takes any attach_type; target_fd (after prog_fd)
		 * names the program whose code it replaces, or 0 for the one
		 * it was loaded for.
		 */
		if (a != BPF_STRUCT_OPS) {
			bpf_probe_read_kernel(&fd, sizeof(fd), attr);
			bpf_probe_read_kernel(&b, sizeof(b), (const char *)attr + 4);
			if (ext_attach_overrides(fd_private(fd), b))
				return refuse(KG_OP_BPF, (__u64)cmd << 32);
		}
		return 0;
	case BPF_PROG_ATTACH: {
		/*
		 * target_fd, attach_bpf_fd, attach_type: a BPF_LSM_CGROUP program
		 * attached to a cgroup without a link (prog_overrides).
		 */
		__u64 what = 0;

		bpf_probe_read_kernel(&a, sizeof(a), (const char *)attr + 8);
		if (a != BPF_LSM_CGROUP)
			return 0;
		bpf_probe_read_kernel(&fd, sizeof(fd), (const char *)attr + 4);
		if (prog_overrides(fd_private(fd), &what))
			return refuse(KG_OP_BPF, ((__u64)cmd << 32) | (__u32)what);
		return 0;
	}
	case BPF_RAW_TRACEPOINT_OPEN: {
		/* raw_tracepoint.prog_fd follows the name pointer; the way
		 * tracing and LSM programs were attached before BPF_LINK_CREATE. */
		__u64 what = 0;

		bpf_probe_read_kernel(&fd, sizeof(fd), (const char *)attr + 8);
		if (prog_overrides(fd_private(fd), &what))
			return refuse(KG_OP_BPF, ((__u64)cmd << 32) | (__u32)what);
		return 0;
	}
	case BPF_PROG_LOAD:
		/* prog_type at 0, expected_attach_type at 68 */
		bpf_probe_read_kernel(&a, sizeof(a), attr);
		bpf_probe_read_kernel(&b, sizeof(b), (const char *)attr + 68);
		if (a == BPF_PROG_TYPE_TRACING && b == BPF_MODIFY_RETURN)
			return refuse(KG_OP_BPF, (__u64)cmd << 32);
		return 0;
	}
	return 0;
}

/*
 * bpf_prog(prog): a program gets its first descriptor after the verifier
 * bound its maps, so prog->aux->used_maps is the kernel's own list. Once
 * sealed, no program that uses a guard map gets one: a program can write
 * a map it holds even through a read-only descriptor, and a kprobe program
 * runs nested in the guard's (e.g. in bpf_probe_read_kernel) and could
 * rewrite a decision in progress. The decision ring buffer counts too
 * (KG_PROT_EVENTS): a program holding it could write forged decisions into
 * it, or reserve all of its space so that the real ones are dropped. This
 * also refuses descriptors to the guard's own programs once sealed.
 */
#define KG_MAX_USED_MAPS 64 /* MAX_USED_MAPS */

/*
 * guard_shaped_slots: map is a map-of-maps whose slots hold PERCPU_ARRAYs
 * or ring buffers. The maps the guard writes (scratch, busy flags,
 * counters) are all PERCPU_ARRAYs and cannot be BPF_F_RDONLY_PROG, and a
 * ring buffer has no such flag: a read-only fd to one is enough to make it
 * the inner template and a slot of root's own outer map, and the slot's fd
 * is in user memory the kernel reads after the bpf hook. So once sealed,
 * programs that use such an outer map are refused.
 */
static __always_inline bool guard_shaped_slots(struct bpf_map___guard *map)
{
	struct bpf_map___guard *inner = NULL;
	__u32 type = 0;

	kg_read(type, map->map_type);
	if (type != BPF_MAP_TYPE_ARRAY_OF_MAPS && type != BPF_MAP_TYPE_HASH_OF_MAPS)
		return false;
	kg_read(inner, map->inner_map_meta);
	if (!inner)
		return true; /* fail closed */
	kg_read(type, inner->map_type);
	return type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_RINGBUF;
}

SEC("lsm/bpf_prog")
int kg_bpf_prog(__u64 *ctx)
{
	struct bpf_prog___guard *prog = (void *)ctx[0];
	struct bpf_prog_aux___guard *aux = NULL;
	struct bpf_map___guard **used = NULL;
	__u32 cnt = 0;
	__u64 what = 0;

	if (!sealed())
		return 0;
	/* A pinned one (BPF_OBJ_GET) or one found by id gets no fd either. */
	if (prog_overrides(prog, &what))
		return refuse(KG_OP_BPF, ((__u64)BPF_PROG_LOAD << 32) | (__u32)what);
	kg_read(aux, prog->aux);
	if (!aux)
		return refuse(KG_OP_BPF, (__u64)BPF_PROG_LOAD << 32);
	kg_read(cnt, aux->used_map_cnt);
	kg_read(used, aux->used_maps);
	if (cnt > KG_MAX_USED_MAPS)
		return refuse(KG_OP_BPF, (__u64)BPF_PROG_LOAD << 32);
	for (int i = 0; i < KG_MAX_USED_MAPS; i++) {
		struct bpf_map___guard *map = NULL;
		__u32 id = 0;

		if (i >= cnt)
			break;
		bpf_probe_read_kernel(&map, sizeof(map), &used[i]);
		if (!map)
			continue;
		kg_read(id, map->id);
		if (protected(KG_PROT_MAP, 0, id) || protected(KG_PROT_EVENTS, 0, id))
			return refuse(KG_OP_BPF, ((__u64)BPF_PROG_LOAD << 32) | id);
		if (guard_shaped_slots(map))
			return refuse(KG_OP_BPF, ((__u64)BPF_PROG_LOAD << 32) | id);
	}
	return 0;
}

/* bpf_map(map, fmode): no new writable descriptor to a guard map once sealed. */
SEC("lsm/bpf_map")
int kg_bpf_map(__u64 *ctx)
{
	struct bpf_map___guard *map = (void *)ctx[0];
	__u32 fmode = (__u32)ctx[1];
	__u32 id = 0;

	if (!(fmode & FMODE_WRITE) || !sealed())
		return 0;
	kg_read(id, map->id);
	if (protected(KG_PROT_MAP, 0, id))
		return refuse(KG_OP_BPF, id);
	return 0;
}

static __always_inline bool protected_dentry(struct dentry___guard *d, __u32 kind, __u64 *ino)
{
	struct inode___guard *inode = NULL;
	struct super_block___guard *sb = NULL;
	__u32 dev = 0;

	*ino = 0;
	if (!d)
		return false;
	kg_read(inode, d->d_inode);
	if (!inode)
		return false;
	kg_read(sb, inode->i_sb);
	if (!sb)
		return false;
	kg_read(dev, sb->s_dev);
	kg_read(*ino, inode->i_ino);
	return protected(kind, dev, *ino);
}

static __always_inline bool guard_inode(struct dentry___guard *d, __u64 *ino)
{
	return protected_dentry(d, KG_PROT_INODE, ino);
}

/* inode_unlink(dir, dentry): the pins cannot be removed once sealed. */
SEC("lsm/inode_unlink")
int kg_inode_unlink(__u64 *ctx)
{
	__u64 ino;

	if (!sealed())
		return 0;
	if (guard_inode((void *)ctx[1], &ino))
		return refuse(KG_OP_UNLINK, ino);
	return 0;
}

/* inode_rmdir(dir, dentry): nor their directory. */
SEC("lsm/inode_rmdir")
int kg_inode_rmdir(__u64 *ctx)
{
	__u64 ino;

	if (!sealed())
		return 0;
	if (guard_inode((void *)ctx[1], &ino))
		return refuse(KG_OP_UNLINK, ino);
	return 0;
}

/* inode_rename(old_dir, old, new_dir, new): no moving them, nor over them. */
SEC("lsm/inode_rename")
int kg_inode_rename(__u64 *ctx)
{
	__u64 ino;

	if (!sealed())
		return 0;
	if (guard_inode((void *)ctx[1], &ino) || guard_inode((void *)ctx[3], &ino))
		return refuse(KG_OP_RENAME, ino);
	return 0;
}

/*
 * umount_takes_pins: unmounting m would take a mount that holds the pins
 * away. Either m is one of them (KG_PROT_MOUNT: the bpffs mount and each
 * mount above it, by mnt_id), or m sits on the same inode as one of them
 * under a parent that shares propagation: the kernel then unmounts the
 * mount at the same place in every peer of the parent (propagate_umount),
 * the protected one included, and sb_umount only ever sees m. That is what
 * a copy of the mounts made by `unshare -m --propagation unchanged` or by
 * `mount --rbind` is. A copy under a private parent (the default of
 * unshare) unmounts alone. *what is m's mount id, for the report.
 */
static __always_inline bool umount_takes_pins(struct mount___guard *m, __u64 *what)
{
	struct mount___guard *parent = NULL;
	struct dentry___guard *point = NULL;
	int id = 0, group = 0;
	__u64 ino;

	kg_read(id, m->mnt_id);
	*what = (__u32)id;
	if (protected(KG_PROT_MOUNT, 0, (__u32)id))
		return true;
	kg_read(parent, m->mnt_parent);
	if (!parent || parent == m)
		return false;
	kg_read(group, parent->mnt_group_id);
	if (!group)
		return false;
	kg_read(point, m->mnt_mountpoint);
	return protected_dentry(point, KG_PROT_MOUNTPOINT, &ino);
}

#define MNT_DETACH 2
/* mount(2) flags */
#define MS_REMOUNT 32
#define MS_BIND 4096
#define MS_MOVE 8192
#define MS_PROPAGATION \
	((1 << 17) | (1 << 18) | (1 << 19) | (1 << 20)) /* UNBINDABLE, PRIVATE, SLAVE, SHARED */

/* current_mnt_ns: the inode number of the caller's mount namespace. */
static __always_inline __u32 current_mnt_ns(void)
{
	struct task_struct___guard *task = (void *)bpf_get_current_task();
	struct nsproxy *nsp = NULL;
	struct mnt_namespace *mnt_ns = NULL;
	unsigned int inum = 0;

	kg_read(nsp, task->nsproxy);
	if (!nsp)
		return 0;
	kg_read(mnt_ns, nsp->mnt_ns);
	if (!mnt_ns)
		return 0;
	kg_read(inum, mnt_ns->ns.inum);
	return inum;
}

/*
 * in_pins_ns: the caller is in a mount namespace that holds the protected
 * mounts (KG_PROT_MNTNS: the sealer's and init's), or its namespace cannot
 * be read (fail closed). *ns is the namespace, for the report.
 */
static __always_inline bool in_pins_ns(__u32 *ns)
{
	*ns = current_mnt_ns();
	return !*ns || protected(KG_PROT_MNTNS, 0, *ns);
}

/* covers_pins: a mount on path would hide the pins (KG_PROT_PATH). */
static __always_inline bool covers_pins(struct path___guard *path, __u64 *ino)
{
	struct dentry___guard *d = NULL;

	kg_read(d, path->dentry);
	return protected_dentry(d, KG_PROT_PATH, ino);
}

/*
 * sb_mount(dev_name, path, type, flags, data), in the namespaces that hold
 * the pins, once sealed:
 *
 *   - no MS_MOVE. A mount holding the pins, moved, keeps its id (sb_umount
 *     still refuses it) but sits on an inode the seal did not record, so a
 *     copy of it there whose unmount propagates to it could take it away.
 *     mount(2) names the mount to move by a path string, which this hook
 *     cannot resolve as the kernel will: every MS_MOVE is refused there.
 *     Object: the namespace.
 *   - no new mount (a new file system, or MS_BIND) on a directory of the
 *     path from / to the pins (KG_PROT_PATH): it would hide them, and a
 *     daemon started after it would load a second, unsealed guard and read
 *     its decisions instead. Object: the directory's inode.
 *
 * Remounts and propagation changes pass. In other namespaces (a
 * container's) every mount is a copy with an id of its own: moving it, or
 * mounting over it, leaves the pins where they are.
 */
SEC("lsm/sb_mount")
int kg_sb_mount(__u64 *ctx)
{
	struct path___guard *path = (void *)ctx[1];
	unsigned long flags = (unsigned long)ctx[3];
	bool move = flags & MS_MOVE;
	bool add =
		!(flags & MS_REMOUNT) && !move && ((flags & MS_BIND) || !(flags & MS_PROPAGATION));
	__u64 ino = 0;
	__u32 ns;

	if ((!move && !add) || !sealed() || !in_pins_ns(&ns))
		return 0;
	if (move)
		return refuse(KG_OP_MOUNT, ns);
	if (covers_pins(path, &ino))
		return refuse(KG_OP_MOUNT, ino);
	return 0;
}

/*
 * move_mount(from_path, to_path): the new mount API names the mount to
 * move itself, so that check is exact, in every namespace: a protected
 * mount (by mount id) is not moved (object: its id). And, as for
 * sb_mount, nothing is moved onto the path to the pins in the namespaces
 * that hold them (object: the directory's inode).
 */
SEC("lsm/move_mount")
int kg_move_mount(__u64 *ctx)
{
	struct path___guard *from = (void *)ctx[0];
	struct path___guard *to = (void *)ctx[1];
	struct vfsmount___guard *vmnt = NULL;
	struct mount___guard *m;
	__u64 ino = 0;
	__u32 ns;
	int id = 0;

	if (!sealed())
		return 0;
	kg_read(vmnt, from->mnt);
	if (vmnt) {
		m = kg_container_of(vmnt, struct mount___guard, mnt);
		kg_read(id, m->mnt_id);
		if (protected(KG_PROT_MOUNT, 0, (__u32)id))
			return refuse(KG_OP_MOUNT, (__u32)id);
	}
	if (in_pins_ns(&ns) && covers_pins(to, &ino))
		return refuse(KG_OP_MOUNT, ino);
	return 0;
}

/*
 * sb_pivotroot(old_path, new_path), in the namespaces that hold the pins,
 * once sealed: refused, as MS_MOVE is. pivot_root(2) moves the caller's
 * root mount to put_old and the mount at new_root to where the root was.
 * A thread chrooted into /sys (a mount with a parent) can so put the
 * bpffs holding the pins on /sys and sysfs under it: both keep their ids,
 * but the pins leave their path (a daemon or status finds no guard there)
 * and the mounts sit on inodes the seal did not record. The kernel calls
 * the hook before it looks at the mounts (which must all be in the
 * caller's namespace), so the namespace decides. Object: the namespace.
 * In other namespaces (a container runtime's pivot_root) the mounts are
 * copies, and pass.
 */
SEC("lsm/sb_pivotroot")
int kg_sb_pivotroot(__u64 *ctx)
{
	__u32 ns;

	if (!sealed() || !in_pins_ns(&ns))
		return 0;
	return refuse(KG_OP_MOUNT, ns);
}

#define KG_MAX_UMOUNT_WALK 256 /* mounts below a lazy umount checked before giving up */

/*
 * sb_umount(mnt, flags): the mounts holding the pins stay mounted. Other
 * mounts, of the same file systems too (bind mounts of /, another sysfs,
 * a bpffs in another mount namespace), unmount as usual.
 *
 * A lazy umount (MNT_DETACH) takes the whole tree below mnt, and each
 * mount of it propagates its unmount as above, unseen by this hook: the
 * tree is walked (pre-order, through mnt_mounts and mnt_child, without a
 * stack) and refused when any mount in it would take the pins. A tree too
 * large to walk, or a read that fails, is refused (fail closed). The hook
 * runs before the kernel takes its mount lock: a copy mounted into the
 * tree after the walk is not seen (a race, documented). Without MNT_DETACH
 * the kernel unmounts only a mount without children.
 */
SEC("lsm/sb_umount")
int kg_sb_umount(__u64 *ctx)
{
	struct vfsmount___guard *vmnt = (void *)ctx[0];
	int flags = (int)ctx[1];
	struct mount___guard *top, *cur, *parent;
	struct list_head___guard *next;
	bool up = false;
	__u64 what = 0;

	if (!sealed())
		return 0;
	top = kg_container_of(vmnt, struct mount___guard, mnt);
	if (umount_takes_pins(top, &what))
		return refuse(KG_OP_UMOUNT, what);
	if (!(flags & MNT_DETACH))
		return 0;
	cur = top;
	for (int i = 0; i < KG_MAX_UMOUNT_WALK; i++) {
		next = NULL;
		parent = NULL;
		if (!up) {
			/* down to the first child */
			kg_read(next, cur->mnt_mounts.next);
			if (!next)
				break;
			if (next != __builtin_preserve_access_index(&cur->mnt_mounts)) {
				cur = kg_container_of(next, struct mount___guard, mnt_child);
				if (umount_takes_pins(cur, &what))
					return refuse(KG_OP_UMOUNT, what);
				continue;
			}
			up = true;
		}
		if (cur == top)
			return 0; /* walked the whole tree */
		/* on to the next sibling, or up to the parent */
		kg_read(next, cur->mnt_child.next);
		kg_read(parent, cur->mnt_parent);
		if (!next || !parent)
			break;
		if (next != __builtin_preserve_access_index(&parent->mnt_mounts)) {
			cur = kg_container_of(next, struct mount___guard, mnt_child);
			if (umount_takes_pins(cur, &what))
				return refuse(KG_OP_UMOUNT, what);
			up = false;
			continue;
		}
		cur = parent;
	}
	/* Not walked to the end: fail closed. */
	umount_takes_pins(top, &what);
	return refuse(KG_OP_UMOUNT, what);
}
