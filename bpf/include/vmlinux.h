/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * vmlinux.h: the kernel types kmodguard's BPF programs read, written by hand
 * for this project. Each struct lists only the fields the programs use, and
 * every record carries preserve_access_index, so clang records a CO-RE
 * relocation for each access and libbpf-style loaders (cilium/ebpf) fix the
 * offsets up against the running kernel's BTF. One header therefore serves
 * amd64 and arm64, and every kernel from 6.1 on.
 *
 * Keep the two sections apart: the sensor's types, then the guard's. A type
 * both need lives in the shared section.
 */
#ifndef KG_VMLINUX_H
#define KG_VMLINUX_H

#include "kg_bpf.h"

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

/* ---- shared types ---------------------------------------------------- */

typedef __u32 dev_t;
typedef long long loff_t;
typedef __u32 uid_t;
typedef struct {
	uid_t val;
} kuid_t;

struct qstr {
	const unsigned char *name;
};

struct super_block {
	dev_t s_dev;
};

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
};

struct vfsmount {
	struct dentry *mnt_root;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct inode {
	unsigned long i_ino;
	unsigned int i_nlink;
	loff_t i_size;
	struct super_block *i_sb;
	/*
	 * 6.11 on: mtime and ctime are split in two fields each (see the
	 * ___flavors). From 6.13 the top bit of i_ctime_nsec is
	 * I_CTIME_QUERIED (multigrain timestamps), not part of the time.
	 */
	long long i_mtime_sec;
	__u32 i_mtime_nsec;
	long long i_ctime_sec;
	__u32 i_ctime_nsec;
};

struct file {
	struct path f_path;
	struct inode *f_inode;
};

/* ---- sensor types (bpf/sensor.bpf.c) --------------------------------- */

typedef int pid_t;

/* The syscall's saved registers: arguments at sys_enter, number at sys_exit. */
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long bx;
	unsigned long r10;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
};

/* TS_COMPAT in status marks a 32-bit syscall. */
struct thread_info {
	__u32 status;
};
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
	__u64 regs[31];
	__u64 pstate; /* SPSR at the exception: PSR_MODE32_BIT for AArch32 */
	__s32 syscallno;
};
#endif

struct timespec64 {
	long long tv_sec;
	long tv_nsec;
};

/* inode ctime before 6.6, mtime before 6.7: one timespec64 each. */
struct inode___v61 {
	struct timespec64 i_mtime;
	struct timespec64 i_ctime;
};

/* inode times up to 6.10: __i_ctime from 6.6, __i_mtime from 6.7. */
struct inode___v66 {
	struct timespec64 __i_mtime;
	struct timespec64 __i_ctime;
};

/* kernel_cap_t from 6.3 on: one u64. */
typedef struct {
	__u64 val;
} kernel_cap_t;

/* kernel_cap_t before 6.3: two u32 words. */
struct kernel_cap_struct {
	__u32 cap[2];
};

struct ns_common {
	unsigned int inum;
};

struct user_namespace {
	struct ns_common ns;
	int level;
};

struct cred {
	kernel_cap_t cap_effective;
	struct user_namespace *user_ns;
};

struct cred___v61 {
	struct kernel_cap_struct cap_effective;
};

struct mnt_namespace {
	struct ns_common ns;
};

struct pid_namespace {
	struct ns_common ns;
};

struct upid {
	int nr;
	struct pid_namespace *ns;
};

struct pid {
	unsigned int level;
	struct upid numbers[1];
};

struct nsproxy {
	struct mnt_namespace *mnt_ns;
};

struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
};

/* kernfs_node from 6.15 on: the parent pointer is __parent. */
struct kernfs_node {
	struct kernfs_node *__parent;
	const char *name;
};

/* kernfs_node before 6.15. */
struct kernfs_node___v61 {
	struct kernfs_node *parent;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct css_set {
	struct cgroup *dfl_cgrp;
};

struct task_struct {
#if defined(__TARGET_ARCH_x86)
	struct thread_info thread_info;
#endif
	unsigned int flags;
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	struct pid *thread_pid;
	struct mm_struct *mm;
	const struct cred *cred;
	struct files_struct *files;
	struct nsproxy *nsproxy;
	kuid_t loginuid;
	struct css_set *cgroups;
};

/*
 * A loaded module (include/linux/module.h): read by the sensor's programs
 * on module:module_load and module:module_free, and by scan's walk of the
 * module address tree. sig_ok exists only with CONFIG_MODULE_SIG.
 */
enum module_state {
	MODULE_STATE_LIVE,
	MODULE_STATE_COMING,
	MODULE_STATE_GOING,
	MODULE_STATE_UNFORMED,
};

struct module {
	enum module_state state;
	char name[56];
	bool sig_ok;
	unsigned long taints;
};

/* The kernel's module address tree (kernel/module/internal.h, include/linux/rbtree_latch.h). */
struct rb_node {
	unsigned long __rb_parent_color;
	struct rb_node *rb_right;
	struct rb_node *rb_left;
};

struct rb_root {
	struct rb_node *rb_node;
};

struct latch_tree_node {
	struct rb_node node[2];
};

struct latch_tree_root {
	struct rb_root tree[2];
};

struct mod_tree_node {
	struct module *mod;
	struct latch_tree_node node;
};

struct mod_tree_root {
	struct latch_tree_root root;
};

/* ---- guard types (lsm/guard.bpf.c) ----------------------------------- */

/*
 * The guard's structs carry the ___guard flavour: CO-RE strips the suffix
 * when it matches against the kernel, and the sensor's section stays free to
 * declare the same kernel types with other fields.
 */
enum kernel_load_data_id {
	LOADING_UNKNOWN = 0,
	LOADING_FIRMWARE = 1,
	LOADING_MODULE = 2,
	LOADING_KEXEC_IMAGE = 3,
	LOADING_KEXEC_INITRAMFS = 4,
	LOADING_POLICY = 5,
	LOADING_X509_CERTIFICATE = 6,
};

enum kernel_read_file_id {
	READING_UNKNOWN = 0,
	READING_FIRMWARE = 1,
	READING_MODULE = 2,
	READING_KEXEC_IMAGE = 3,
	READING_KEXEC_INITRAMFS = 4,
	READING_POLICY = 5,
	READING_X509_CERTIFICATE = 6,
};

struct super_block___guard {
	__u32 s_dev;
} __attribute__((preserve_access_index));

struct inode___guard {
	unsigned long i_ino;
	struct super_block___guard *i_sb;
} __attribute__((preserve_access_index));

struct dentry___guard {
	struct inode___guard *d_inode;
} __attribute__((preserve_access_index));

struct vfsmount___guard {
	struct super_block___guard *mnt_sb;
} __attribute__((preserve_access_index));

struct list_head___guard {
	struct list_head___guard *next;
} __attribute__((preserve_access_index));

/*
 * struct mount embeds the vfsmount the LSM hooks see (kg_container_of).
 * mnt_mounts lists its children, linked through their mnt_child;
 * mnt_group_id is its peer group (0 when it does not share propagation).
 */
struct mount___guard {
	struct mount___guard *mnt_parent;
	struct dentry___guard *mnt_mountpoint;
	struct vfsmount___guard mnt;
	struct list_head___guard mnt_mounts;
	struct list_head___guard mnt_child;
	int mnt_id;
	int mnt_group_id;
} __attribute__((preserve_access_index));

struct file___guard {
	void *private_data;
} __attribute__((preserve_access_index));

struct fdtable___guard {
	unsigned int max_fds;
	struct file___guard **fd;
} __attribute__((preserve_access_index));

struct files_struct___guard {
	struct fdtable___guard *fdt;
} __attribute__((preserve_access_index));

struct task_struct___guard {
	struct files_struct___guard *files;
	struct nsproxy *nsproxy;
	const struct cred *cred;
	struct pid *thread_pid;
} __attribute__((preserve_access_index));

struct path___guard {
	struct vfsmount___guard *mnt;
	struct dentry___guard *dentry;
} __attribute__((preserve_access_index));

/* Named for CO-RE only; the BPF_MAP_TYPE_* values are in kg_bpf.h. */
enum bpf_map_type { KG_BPF_MAP_TYPE_UNSPEC = 0 };
/* Named for CO-RE only; the values the guard compares are UAPI (guard.bpf.c). */
enum bpf_prog_type { KG_BPF_PROG_TYPE_UNSPEC = 0 };
enum bpf_attach_type { KG_BPF_ATTACH_TYPE_UNSPEC = 0 };

struct bpf_map___guard {
	__u32 id;
	enum bpf_map_type map_type;
	struct bpf_map___guard *inner_map_meta; /* map-of-maps: the inner template */
} __attribute__((preserve_access_index));

struct bpf_link___guard {
	__u32 id;
} __attribute__((preserve_access_index));

struct bpf_prog___guard;

struct bpf_prog_aux___guard {
	__u32 used_map_cnt;
	__u32 attach_btf_id;
	struct bpf_map___guard **used_maps;
	struct bpf_prog___guard *dst_prog; /* an extension's target until its first attach */
} __attribute__((preserve_access_index));

struct bpf_prog___guard {
	enum bpf_prog_type type;
	enum bpf_attach_type expected_attach_type;
	struct bpf_prog_aux___guard *aux;
} __attribute__((preserve_access_index));

#pragma clang attribute pop

#endif /* KG_VMLINUX_H */
