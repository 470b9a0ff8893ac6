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

#pragma clang attribute pop

#endif /* KG_VMLINUX_H */
