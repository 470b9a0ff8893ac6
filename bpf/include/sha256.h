/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * sha256.h: SHA-256 (FIPS 180-4) of a kernel buffer, in BPF.
 *
 * No kernel helper hashes an arbitrary buffer, so the guard hashes the
 * kernel's own copy of a module image itself:
 *
 *   __u8 digest[KG_SHA256_DIGEST_SIZE];
 *   long err = kg_sha256(buf, size, digest, 0);
 *
 * buf is a kernel address that is only ever read with bpf_probe_read_kernel:
 * the char *buf argument of the kernel_post_load_data and
 * kernel_post_read_file LSM hooks, which the verifier types as a scalar.
 * (A caller holding a verifier-typed pointer, such as a map value, must pass
 * it as a plain scalar; see lsm/bpftest.) out may point to the stack or to a
 * map value. kg_sha256 returns
 *
 *   0        out holds the digest of the size bytes at buf;
 *   -E2BIG   size is larger than KG_SHA256_MAX_SIZE (out untouched);
 *   -EFAULT  bpf_probe_read_kernel failed on part of the buffer;
 *   -EBUSY   another kg_sha256 call on this CPU is in progress (see
 *            "Preemption" below);
 *   -ENOENT  the per-CPU scratch map could not be read (cannot happen for
 *            an array map, but the verifier wants the check).
 *
 * How: a bpf_loop (helper 181, Linux 5.17+, so 6.1, 6.12 and 6.18 all have
 * it; 6.0+ inline it) reads the buffer KG_SHA256_CHUNK bytes at a time with
 * bpf_probe_read_kernel, and an inner bpf_loop runs the fully unrolled
 * compression function on each 64-byte block of the chunk. The last
 * size % KG_SHA256_CHUNK bytes, the 0x80 marker and the 64-bit bit length
 * then fill up to KG_SHA256_BUF_BLOCKS final blocks, compressed by the same
 * callback. The running state and the block buffer live in the
 * per-CPU array kg_sha256_scratch, because the BPF stack is 512 bytes.
 *
 * Preemption: BPF programs run with migration disabled, so a call stays on
 * one CPU, but on a preemptible kernel (preempt=full, PREEMPT_RT) or in a
 * sleepable program another task can run on that CPU in the middle of a
 * call and hash with the same slot. Each call therefore claims the slot with
 * an atomic compare-and-swap and returns -EBUSY, without touching it, when
 * it is taken: a caller that enforces must treat that as "no digest" (deny)
 * rather than trust a mixed state. A program nesting on the same CPU is
 * turned away the same way. Under voluntary preemption (Debian's default)
 * nothing preempts a call, which never sleeps, so -EBUSY does not happen.
 *
 * Cost: about 245 MB/s on the development host (AMD EPYC, Linux 6.18),
 * level with Go's portable SHA-256 and a tenth of SHA-NI (make bench), so
 * ~80 ms for Debian's largest module. Verification cost does not depend on
 * size: about 9.5k instructions per calling program, because the
 * compression exists only in one callback, called from two bpf_loops.
 * Include this header once per BPF object, after kg_bpf.h.
 */
#ifndef KG_SHA256_H
#define KG_SHA256_H

#include "kg_bpf.h"

#ifndef EBUSY
#define EBUSY 16
#endif

#define KG_SHA256_DIGEST_SIZE 32
#define KG_SHA256_BLOCK_SIZE 64

/*
 * KG_SHA256_MAX_SIZE is the largest buffer kg_sha256 hashes: 64 MiB, well
 * above the largest module of a distribution kernel (Debian 6.1's largest,
 * amdgpu.ko, is 19 MB). The bound keeps bpf_loop's count below its 1<<23
 * limit and the time spent in one hook bounded. Define it before including
 * this header to change it; it must stay below 4 GiB, bpf_loop's limit of
 * 1<<23 iterations of KG_SHA256_CHUNK bytes.
 */
#ifndef KG_SHA256_MAX_SIZE
#define KG_SHA256_MAX_SIZE (64ULL << 20)
#endif

/*
 * KG_SHA256_CHUNK is how many bytes one loop iteration reads with one
 * bpf_probe_read_kernel call: a few blocks, so that the helper call is
 * amortized over several compressions.
 */
#define KG_SHA256_CHUNK_BLOCKS 8
#define KG_SHA256_CHUNK (KG_SHA256_CHUNK_BLOCKS * KG_SHA256_BLOCK_SIZE)
/* Room for a chunk less one byte, the 0x80 marker and the length. */
#define KG_SHA256_BUF_BLOCKS (KG_SHA256_CHUNK_BLOCKS + 1)

/*
 * KG_SCRATCH_SLOTS is how many calls may be under way on one CPU at once
 * (each preempted but one): a caller that claims slot i of its own passes i
 * (see "Preemption" above). One unless the includer says otherwise.
 */
#ifndef KG_SCRATCH_SLOTS
#define KG_SCRATCH_SLOTS 1
#endif

/* Per-call state, KG_SCRATCH_SLOTS slots per CPU. */
struct kg_sha256_scratch {
	__u32 h[8];  /* running hash state */
	__u32 w[16]; /* message schedule ring */
	__u64 buf;   /* kernel address being hashed */
	__s64 err;   /* first read error seen by the loop */
	__u64 busy;  /* set while a kg_sha256 call owns the slot */
	__u8 block[KG_SHA256_BUF_BLOCKS *
		   KG_SHA256_BLOCK_SIZE]; /* chunk being compressed; final blocks */
};

/* kg_sha256_scratch: slot -> this CPU's SHA-256 working state for that slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KG_SCRATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct kg_sha256_scratch);
} kg_sha256_scratch SEC(".maps");

/*
 * BPF has no rotate instruction, and a 32-bit rotate costs five (two
 * shifts, an or and two moves). Instead the 32-bit word x is doubled into
 * the 64-bit x:x, where a right shift by n leaves ror32(x, n) in the low
 * half; the three rotations of each sigma then factor into three shifts of
 * that one doubled word, because shifts distribute over xor:
 *   ror2 ^ ror13 ^ ror22 = (((x:x >> 9 ^ x:x) >> 11) ^ x:x) >> 2.
 * That takes a round from about 93 to 72 instructions and raised the
 * throughput by 40% on the development host.
 */
#define KG_DUP(x) ((__u64)(x) | ((__u64)(x) << 32))
#define KG_S0(x) ((__u32)(((((KG_DUP(x) >> 9) ^ KG_DUP(x)) >> 11) ^ KG_DUP(x)) >> 2))
#define KG_S1(x) ((__u32)(((((KG_DUP(x) >> 14) ^ KG_DUP(x)) >> 5) ^ KG_DUP(x)) >> 6))
#define KG_s0(x) ((__u32)((((KG_DUP(x) >> 11) ^ KG_DUP(x)) >> 7)) ^ ((x) >> 3))
#define KG_s1(x) ((__u32)((((KG_DUP(x) >> 2) ^ KG_DUP(x)) >> 17)) ^ ((x) >> 10))
#define KG_CH(e, f, g) ((g) ^ ((e) & ((f) ^ (g))))
#define KG_MAJ(a, b, c) (((a) & (b)) | ((c) & ((a) | (b))))

/* Next schedule word W[i] for i >= 16, kept in a 16-word ring. */
#define KG_W(i) (w[(i)&15] += KG_s1(w[((i)-2) & 15]) + w[((i)-7) & 15] + KG_s0(w[((i)-15) & 15]))

/*
 * One round with the eight working variables renamed instead of shifted:
 * d and h are the only ones written. The compiler barrier at the end of each
 * round, and the schedule ring w living in the scratch map rather than on
 * the stack, keep clang from hoisting schedule words far ahead of their use:
 * with only ten BPF registers that spills heavily. (With w on the stack and
 * no barrier, clang 14 overflows the 512-byte stack; with w in the map and
 * no barrier, hashing is about 10% slower here.)
 */
#define KG_RND(a, b, c, d, e, f, g, h, k, wi)                          \
	do {                                                           \
		__u32 t1 = h + KG_S1(e) + KG_CH(e, f, g) + (k) + (wi); \
		d += t1;                                               \
		h = t1 + KG_S0(a) + KG_MAJ(a, b, c);                   \
		barrier();                                             \
	} while (0)

#define KG_RND8(i, k0, k1, k2, k3, k4, k5, k6, k7, W)           \
	do {                                                    \
		KG_RND(a, b, c, d, e, f, g, h, k0, W((i) + 0)); \
		KG_RND(h, a, b, c, d, e, f, g, k1, W((i) + 1)); \
		KG_RND(g, h, a, b, c, d, e, f, k2, W((i) + 2)); \
		KG_RND(f, g, h, a, b, c, d, e, k3, W((i) + 3)); \
		KG_RND(e, f, g, h, a, b, c, d, k4, W((i) + 4)); \
		KG_RND(d, e, f, g, h, a, b, c, k5, W((i) + 5)); \
		KG_RND(c, d, e, f, g, h, a, b, k6, W((i) + 6)); \
		KG_RND(b, c, d, e, f, g, h, a, k7, W((i) + 7)); \
	} while (0)

#define KG_W0(i) (w[(i)])

/*
 * kg_sha256_compress folds one 64-byte block p into the state h. Both point
 * into the scratch map value. Its ~4600 instructions are inlined once, into
 * kg_sha256_compress_cb.
 */
static __always_inline void kg_sha256_compress(__u32 *st, const __u8 *p, __u32 *w)
{
	__u32 a = st[0], b = st[1], c = st[2], d = st[3];
	__u32 e = st[4], f = st[5], g = st[6], h = st[7];
	const __u32 *pw = (const __u32 *)p;

#pragma clang loop unroll(full)
	for (int i = 0; i < 16; i++)
		w[i] = __builtin_bswap32(pw[i]);

	KG_RND8(0, 0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
		0x923f82a4, 0xab1c5ed5, KG_W0);
	KG_RND8(8, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
		0x9bdc06a7, 0xc19bf174, KG_W0);
	KG_RND8(16, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
		0x5cb0a9dc, 0x76f988da, KG_W);
	KG_RND8(24, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
		0x06ca6351, 0x14292967, KG_W);
	KG_RND8(32, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb,
		0x81c2c92e, 0x92722c85, KG_W);
	KG_RND8(40, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624,
		0xf40e3585, 0x106aa070, KG_W);
	KG_RND8(48, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
		0x5b9cca4f, 0x682e6ff3, KG_W);
	KG_RND8(56, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb,
		0xbef9a3f7, 0xc67178f2, KG_W);

	st[0] += a;
	st[1] += b;
	st[2] += c;
	st[3] += d;
	st[4] += e;
	st[5] += f;
	st[6] += g;
	st[7] += h;
}

/* The callback context of the loops: the scratch slot of this call. */
struct kg_sha256_loop {
	struct kg_sha256_scratch *s;
};

/*
 * bpf_loop callback: compresses block i of s->block. Every compression goes
 * through here, from two bpf_loop calls, so the verifier walks the
 * unrolled rounds twice per program however long the input.
 */
static long kg_sha256_compress_cb(__u32 i, void *ctx)
{
	struct kg_sha256_scratch *s = ((struct kg_sha256_loop *)ctx)->s;

	if (i >= KG_SHA256_BUF_BLOCKS)
		return 1;
	kg_sha256_compress(s->h, s->block + i * KG_SHA256_BLOCK_SIZE, s->w);
	return 0;
}

/* bpf_loop callback: iteration i hashes chunk i of the buffer. */
static long kg_sha256_chunk_cb(__u32 i, void *ctx)
{
	struct kg_sha256_scratch *s = ((struct kg_sha256_loop *)ctx)->s;
	long err;

	err = bpf_probe_read_kernel(s->block, KG_SHA256_CHUNK,
				    (const void *)(s->buf + (__u64)i * KG_SHA256_CHUNK));
	if (err) {
		s->err = err;
		return 1;
	}
	bpf_loop(KG_SHA256_CHUNK_BLOCKS, kg_sha256_compress_cb, ctx, 0);
	return 0;
}

/* kg_sha256_run does the work of kg_sha256 once it owns the scratch slot. */
static __always_inline long kg_sha256_run(struct kg_sha256_scratch *s, const void *buf, __u64 size,
					  __u8 *out)
{
	struct kg_sha256_loop lp = { .s = s };
	__u64 *z = (__u64 *)s->block;
	__u64 chunks, done, rest, nblocks;
	__u32 v;
	long n;

	s->h[0] = 0x6a09e667;
	s->h[1] = 0xbb67ae85;
	s->h[2] = 0x3c6ef372;
	s->h[3] = 0xa54ff53a;
	s->h[4] = 0x510e527f;
	s->h[5] = 0x9b05688c;
	s->h[6] = 0x1f83d9ab;
	s->h[7] = 0x5be0cd19;
	s->err = 0;

	/* Whole chunks first. */
	chunks = size / KG_SHA256_CHUNK;
	s->buf = (__u64)buf;
	n = bpf_loop(chunks, kg_sha256_chunk_cb, &lp, 0);
	if (n != (long)chunks)
		return s->err ? -EFAULT : -ENOENT;
	done = chunks * KG_SHA256_CHUNK;

	/*
	 * Then the rest, under one chunk, followed by 0x80, zeros, and the
	 * message length in bits as a big-endian u64 at the end of the last
	 * block: nblocks blocks in all, at most KG_SHA256_BUF_BLOCKS.
	 */
	rest = (size - done) & (KG_SHA256_CHUNK - 1);
#pragma clang loop unroll(full)
	for (int j = 0; j < KG_SHA256_BUF_BLOCKS * KG_SHA256_BLOCK_SIZE / 8; j++)
		z[j] = 0;
	if (rest && bpf_probe_read_kernel(s->block, rest, (const void *)((__u64)buf + done)))
		return -EFAULT;
	s->block[rest] = 0x80;
	nblocks = (rest + 1 + 8 + KG_SHA256_BLOCK_SIZE - 1) / KG_SHA256_BLOCK_SIZE;
	if (nblocks > KG_SHA256_BUF_BLOCKS)
		return -ENOENT; /* cannot happen; tells the verifier */
	z[nblocks * (KG_SHA256_BLOCK_SIZE / 8) - 1] = __builtin_bswap64(size << 3);
	bpf_loop(nblocks, kg_sha256_compress_cb, &lp, 0);

#pragma clang loop unroll(full)
	for (int j = 0; j < 8; j++)
		v = s->h[j], out[4 * j] = v >> 24, out[4 * j + 1] = v >> 16,
		out[4 * j + 2] = v >> 8, out[4 * j + 3] = v;
	return 0;
}

/*
 * kg_sha256 hashes size bytes at the kernel address buf into out[32], with
 * this CPU's scratch slot (below KG_SCRATCH_SLOTS).
 */
static __noinline long kg_sha256(const void *buf, __u64 size, __u8 *out, __u32 slot)
{
	struct kg_sha256_scratch *s;
	long err;

	if (size > KG_SHA256_MAX_SIZE)
		return -E2BIG;
	s = bpf_map_lookup_elem(&kg_sha256_scratch, &slot);
	if (!s)
		return -ENOENT;
	/* See "Preemption" above. */
	if (__sync_val_compare_and_swap(&s->busy, 0, 1) != 0)
		return -EBUSY;
	err = kg_sha256_run(s, buf, size, out);
	s->busy = 0;
	return err;
}

#undef KG_DUP
#undef KG_S0
#undef KG_S1
#undef KG_s0
#undef KG_s1
#undef KG_CH
#undef KG_MAJ
#undef KG_W
#undef KG_W0
#undef KG_RND
#undef KG_RND8

#endif /* KG_SHA256_H */
