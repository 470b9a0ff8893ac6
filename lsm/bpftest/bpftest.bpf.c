//go:build ignore
/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * bpftest.bpf.c: test-only raw_tp programs around the guard's shared
 * headers, run from Go with BPF_PROG_TEST_RUN (lsm/bpftest). Each program
 * takes its input from kg_test_input and its length from the first raw_tp
 * argument, and writes its answer to kg_test_out (test_decide: to
 * kg_test_event).
 */
#include "vmlinux.h"
#include "sha256.h"
#include "elf.h"
#include "decide.h"
#include "glob.h"
#include "readid.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Size of one kg_test_input element; the elements are contiguous. */
#define KG_TEST_CHUNK (64 << 10)

struct kg_test_chunk {
	__u8 data[KG_TEST_CHUNK];
};

/*
 * kg_test_input: element i -> bytes [i*KG_TEST_CHUNK, (i+1)*KG_TEST_CHUNK)
 * of the input. An array map's values are one contiguous allocation, so the
 * address of element 0 is the start of a buffer of max_entries*KG_TEST_CHUNK
 * bytes; the Go side sets max_entries before loading.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kg_test_chunk);
} kg_test_input SEC(".maps");

struct kg_test_result {
	__s64 ret;                          /* helper's return value */
	__u8 digest[KG_SHA256_DIGEST_SIZE]; /* kg_sha256 output */
	struct kg_elf_names names;          /* kg_elf_names output */
};

/* kg_test_out: key 0 -> the result of the last run. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kg_test_result);
} kg_test_out SEC(".maps");

/*
 * input_addr returns the address of the input buffer as a plain scalar, the
 * way the LSM hooks hand the guard their char *buf. Copying the pointer
 * through bpf_probe_read_kernel drops the verifier's map-value type, which
 * the headers' address arithmetic would otherwise trip over. Needs
 * CAP_PERFMON, like any pointer-to-scalar conversion.
 */
static __always_inline __u64 input_addr(void)
{
	__u32 zero = 0;
	void *p = bpf_map_lookup_elem(&kg_test_input, &zero);
	__u64 addr = 0;

	if (!p)
		return 0;
	bpf_probe_read_kernel(&addr, sizeof(addr), &p);
	return addr;
}

/* test_sha256: kg_test_out.digest = SHA-256(input[:args[0]]). */
SEC("raw_tp")
int test_sha256(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct kg_test_result *res = bpf_map_lookup_elem(&kg_test_out, &zero);
	__u64 addr = input_addr();

	if (!res || !addr)
		return 1;
	res->ret = kg_sha256((const void *)addr, ctx->args[0], res->digest, 0);
	return 0;
}

/* test_elf_names: kg_test_out.names = the names of the image input[:args[0]]. */
SEC("raw_tp")
int test_elf_names(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct kg_test_result *res = bpf_map_lookup_elem(&kg_test_out, &zero);
	__u64 addr = input_addr();

	if (!res || !addr)
		return 1;
	res->ret = kg_elf_names((const void *)addr, ctx->args[0], &res->names, 0);
	return 0;
}

/* kg_test_event: 0 -> test_decide's decision record (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kg_event);
} kg_test_event SEC(".maps");

/* kg_test_names: 0 -> test_decide's names scratch. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kg_elf_names);
} kg_test_names SEC(".maps");

/*
 * test_decide: kg_test_event = the guard's decision on the image
 * input[:args[0]] under the policy in kg_policy slot 0 (none when empty),
 * as guard.bpf.c's decide() makes it: kg_measure, then kg_judge, with the
 * flags in args[1] (KG_F_FOREIGN: what decide() learns of the caller).
 */
SEC("raw_tp")
int test_decide(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct kg_event *e = bpf_map_lookup_elem(&kg_test_event, &zero);
	__u64 addr = input_addr();

	if (!e || !addr)
		return 1;
	__builtin_memset(e, 0, sizeof(*e));
	e->flags = ctx->args[1];
	kg_measure(e, (const char *)addr, ctx->args[0], bpf_map_lookup_elem(&kg_test_names, &zero),
		   0);
	kg_judge(e, bpf_map_lookup_elem(&kg_policy, &zero));
	return 0;
}

/* test_read_kind: kg_test_out.ret = the guard's kind (readid.h) of read id args[0]. */
SEC("raw_tp")
int test_read_kind(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct kg_test_result *res = bpf_map_lookup_elem(&kg_test_out, &zero);

	if (!res)
		return 1;
	res->ret = kg_read_kind((__u32)ctx->args[0]);
	return 0;
}

/* test_load_kind: kg_test_out.ret = the guard's kind (readid.h) of load id args[0]. */
SEC("raw_tp")
int test_load_kind(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct kg_test_result *res = bpf_map_lookup_elem(&kg_test_out, &zero);

	if (!res)
		return 1;
	res->ret = kg_load_kind((__u32)ctx->args[0]);
	return 0;
}

/* kg_test_glob: 0 -> a pattern, 1 -> an alias, for test_glob and test_autoload. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct kg_glob_str);
} kg_test_glob SEC(".maps");

/* test_glob: kg_test_out.ret = kg_glob_match(kg_test_glob[0], kg_test_glob[1]). */
SEC("raw_tp")
int test_glob(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0, one = 1;
	struct kg_test_result *res = bpf_map_lookup_elem(&kg_test_out, &zero);
	struct kg_glob_str *pat = bpf_map_lookup_elem(&kg_test_glob, &zero);
	struct kg_glob_str *alias = bpf_map_lookup_elem(&kg_test_glob, &one);

	if (!res || !pat || !alias)
		return 1;
	res->ret = kg_glob_match(pat, alias);
	return 0;
}

/*
 * test_autoload: kg_test_out.ret = 1 + the index of the deny pattern of the
 * policy in kg_policy slot 0 that the alias kg_test_glob[1] matches, as
 * guard.bpf.c's kg_module_request finds it; 0 when none does.
 */
SEC("raw_tp")
int test_autoload(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0, one = 1;
	struct kg_test_result *res = bpf_map_lookup_elem(&kg_test_out, &zero);
	struct kg_glob_str *alias = bpf_map_lookup_elem(&kg_test_glob, &one);
	struct kg_policy_val *pat;

	if (!res || !alias)
		return 1;
	pat = kg_autoload_denied(bpf_map_lookup_elem(&kg_policy, &zero), alias);
	res->ret = pat ? (__s64)pat->index + 1 : 0;
	return 0;
}
