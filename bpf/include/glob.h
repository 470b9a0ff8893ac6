/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * glob.h: the guard's matcher of autoload patterns (the allowlist's
 * spec.autoload.deny), shared by the guard (lsm/guard.bpf.c) and its
 * BPF_PROG_TEST_RUN tests (lsm/bpftest), which hold it to
 * allowlist.MatchAlias on the same cases.
 *
 * A pattern is a shell glob over the whole alias: '*' matches any run of
 * bytes (none too), '?' any one byte, every other byte itself, except that
 * '-' and '_' match each other (modprobe reads aliases so). Patterns come
 * from user space folded (allowlist.FoldPattern): '-' written as '_', no two
 * stars in a row.
 *
 * The matcher runs the pattern as an automaton over its positions, kept as
 * a bitmask (bit j: the alias read so far matches the pattern's first j
 * bytes), one step per byte of the alias: KG_GLOB_LEN steps of
 * KG_GLOB_LEN comparisons each, without backtracking, and without a branch
 * on the bytes compared, so that the verifier walks one path.
 *
 * Include decide.h first.
 */
#ifndef KG_GLOB_H
#define KG_GLOB_H

#define KG_GLOB_LEN KG_NAME_LEN /* a pattern or an alias, NUL included */

/* A pattern or an alias: NUL-terminated within KG_GLOB_LEN bytes. */
struct kg_glob_str {
	char s[KG_GLOB_LEN];
};

/* kg_is: 1 when a == b, else 0, without a branch. */
static __always_inline __u64 kg_is(__u8 a, __u8 b)
{
	return ((__u64)(a ^ b) - 1) >> 63;
}

/* kg_glob_fold reads '-' as '_', without a branch. */
static __always_inline __u8 kg_glob_fold(__u8 c)
{
	return c + kg_is(c, '-') * ('_' - '-');
}

/*
 * kg_glob_match returns 1 when the alias matches the pattern, else 0 (and 0
 * for a pattern without a NUL). A global function: the verifier checks it
 * once, however many patterns the guard tries. Nothing in its loops
 * branches on a byte but the exit at the alias's end (the pattern's end is
 * a mask), so the verifier walks one path through them: about 66k
 * instructions on 6.18 (lsm/bpftest TestVerifierBudget). Run time is at
 * most KG_GLOB_LEN - 1 comparisons per byte of the alias.
 */
__attribute__((noinline)) int kg_glob_match(const struct kg_glob_str *pat,
					    const struct kg_glob_str *alias)
{
	__u64 stars = 0, nuls = 0, end, upto, live = 1;

	if (!pat || !alias)
		return 0;
	for (int j = 0; j < KG_GLOB_LEN; j++) {
		__u8 c = pat->s[j];

		stars |= kg_is(c, '*') << j;
		nuls |= kg_is(c, 0) << j;
	}
	end = nuls & -nuls; /* the pattern's NUL: bit m, for m bytes */
	if (!end)
		return 0;
	upto = (end << 1) - 1; /* positions 0..m */
	stars &= upto;
	live |= (live & stars) << 1;
	for (int i = 0; i < KG_GLOB_LEN - 1; i++) {
		__u8 c = kg_glob_fold(alias->s[i]);
		__u64 step = 0, next;

		if (!c)
			break; /* the one branch on a byte: out, at the alias's end */
		for (int j = 0; j < KG_GLOB_LEN - 1; j++) {
			__u8 p = pat->s[j];

			step |= (kg_is(p, '?') | kg_is(kg_glob_fold(p), c)) << j;
		}
		/* a star keeps its position; a match moves one on; then on
		 * over a star that follows (stars come one at a time) */
		next = ((live & step & ~stars) << 1) | (live & stars);
		live = (next | ((next & stars) << 1)) & upto;
	}
	return (live & end) != 0;
}

/* Most patterns in a policy (allowlist.MaxAutoloadPatterns). */
#define KG_AUTOLOAD_MAX 32

/*
 * kg_autoload_denied returns the policy record of the first deny pattern
 * (key KG_KEY_AUTOLOAD, data[0] its index; name the pattern) that alias
 * matches, or NULL. policy is a kg_policy_inner-shaped map, or NULL.
 */
static __always_inline struct kg_policy_val *kg_autoload_denied(void *policy,
								const struct kg_glob_str *alias)
{
	struct kg_policy_key key = { .kind = KG_KEY_AUTOLOAD };
	struct kg_glob_str p;

	if (!policy)
		return NULL;
	for (__u32 i = 0; i < KG_AUTOLOAD_MAX; i++) {
		struct kg_policy_val *pat;

		key.data[0] = i;
		pat = bpf_map_lookup_elem(policy, &key);
		if (!pat)
			return NULL; /* the patterns are numbered from 0 without a gap */
		/*
		 * A global function may write what it is given, so the verifier
		 * will not pass it the read-only policy map's value: a copy.
		 */
		__builtin_memcpy(p.s, pat->name, sizeof(p.s));
		if (kg_glob_match(&p, alias))
			return pat;
	}
	return NULL;
}

#endif /* KG_GLOB_H */
