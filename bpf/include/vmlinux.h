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

/* ---- sensor types (bpf/sensor.bpf.c) --------------------------------- */

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
} __attribute__((preserve_access_index));

struct bpf_map___guard {
	__u32 id;
} __attribute__((preserve_access_index));

struct bpf_link___guard {
	__u32 id;
} __attribute__((preserve_access_index));

#pragma clang attribute pop

#endif /* KG_VMLINUX_H */
