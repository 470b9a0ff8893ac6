/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * decide.h: how the guard judges one module image, shared by the guard
 * (lsm/guard.bpf.c) and its BPF_PROG_TEST_RUN tests (lsm/bpftest), which
 * run it on this host against allowlist.Match, the judge of user space.
 *
 * kg_measure fills a decision record with what the image is: its SHA-256
 * (sha256.h) and, for an ELF image, both module names (elf.h). kg_judge
 * then looks that up in a policy map and fills in the verdict and why. The
 * rules are allowlist.Match's, on the one digest the kernel's buffer has:
 *
 *   - a listed digest admits the image when both names equal its entry's
 *     (a compressed buffer has no names: there the digest alone binds);
 *   - otherwise an entry without digests admits an image whose two names
 *     equal its name;
 *   - two names that differ, or that cannot be parsed, admit nothing;
 *   - before any of that, the policy's requirements (the meta record's
 *     index, KG_REQ_*): a caller outside the initial user and PID
 *     namespaces, or an image without a module signature, is refused
 *     whatever the list says.
 *
 * Include sha256.h and elf.h first.
 */
#ifndef KG_DECIDE_H
#define KG_DECIDE_H

#define KG_NAME_LEN 56 /* MODULE_NAME_LEN on 64-bit */

enum kg_verdict {
	KG_VERDICT_ALLOWED = 1,
	KG_VERDICT_BLOCKED = 2,
	KG_VERDICT_AUDIT = 3, /* not allowed, let through in audit mode */
};

/* Why. User space turns these into words (reasons in lsm/decision.go). */
enum kg_reason {
	KG_REASON_DIGEST = 1,            /* digest listed, both names equal the entry */
	KG_REASON_NAME = 2,              /* entry without digests, both names equal it */
	KG_REASON_COMPRESSED_DIGEST = 3, /* compressed file, its digest is listed */
	KG_REASON_NOT_LISTED = 4,        /* neither the digest nor the name is listed */
	KG_REASON_NAME_DIFFERS = 5,      /* digest listed under another name */
	KG_REASON_NAME_MISMATCH = 6,     /* .modinfo name != this_module name */
	KG_REASON_BAD_ELF = 7,           /* not both names could be parsed */
	KG_REASON_COMPRESSED = 8,        /* compressed file whose digest is not listed */
	KG_REASON_NO_CONTENTS = 9,       /* a load the kernel gives us no buffer for */
	KG_REASON_HASH_FAILED = 10,      /* digest could not be computed */
	KG_REASON_NO_POLICY = 11,        /* no allowlist installed */
	KG_REASON_SEALED = 12,           /* seal refusal; op and object say what */
	KG_REASON_BUSY = 13,             /* another decision holds this CPU's scratch */
	KG_REASON_FOREIGN_NS = 14,       /* KG_REQ_HOST_NS, caller in another namespace */
	KG_REASON_UNSIGNED = 15,         /* KG_REQ_SIGNED, no module signature seen */
	KG_REASON_AUTOLOAD_DENIED = 16,  /* autoload request matching a deny pattern (glob.h) */
};

/* Flags of a decision event. */
#define KG_F_COMPRESSED (1U << 0) /* buffer is not an ELF (xz, zstd, gzip) */
#define KG_F_NAMES (1U << 1)      /* name and this_name were parsed */
#define KG_F_MISMATCH (1U << 2)   /* the two names differ */
#define KG_F_DIGEST (1U << 3)     /* digest holds the image's SHA-256 */
#define KG_F_SEALED (1U << 4)     /* the guard was sealed */
#define KG_F_FOREIGN (1U << 5)    /* caller outside the initial user or PID namespace */
#define KG_F_SIGNED (1U << 6)     /* the image ends with a module signature */

/*
 * Requirements of a policy, in its meta record's index: checks that need no
 * digest, made before the list is looked at.
 */
#define KG_REQ_HOST_NS (1U << 0) /* refuse callers flagged KG_F_FOREIGN */
#define KG_REQ_SIGNED (1U << 1)  /* refuse images not flagged KG_F_SIGNED */

/*
 * Kinds of policy keys. KG_KEY_AUTOLOAD keys hold the allowlist's
 * spec.autoload.deny, data[0] numbering the patterns from 0 (glob.h). They
 * live in the policy map rather than in a map of their own so that they
 * are swapped with the rest of the allowlist in the same one update (a
 * request never sees one allowlist's patterns with another's mode), and so
 * that a guard pinned by an older build, whose programs never look these
 * keys up and whose inner-map template has the same key and value, still
 * takes every new policy map (it then does not enforce the deny list: its
 * kg_module_request link is missing, and status says so).
 */
#define KG_KEY_META 0
#define KG_KEY_DIGEST 1
#define KG_KEY_NAME 2
#define KG_KEY_AUTOLOAD 3

#define KG_MODE_ENFORCE 0
#define KG_MODE_AUDIT 1

/* A key of the policy map: the meta record, a digest, or an entry's folded name. */
struct kg_policy_key {
	__u32 kind;
	__u8 data[KG_NAME_LEN];
};

/*
 * A value of the policy map. For a digest or a name, the entry it admits
 * (its folded name and its index in the allowlist). For the meta key, the
 * mode and the generation of the allowlist, and in index its requirements
 * (KG_REQ_*). For an autoload key, the folded pattern in name and its
 * index in spec.autoload.deny.
 */
struct kg_policy_val {
	char name[KG_NAME_LEN];
	__u32 index;
	__u32 mode;
	__u64 generation;
};

/* One decision, sent to user space through kg_events. */
struct kg_event {
	__u64 ts_boot; /* bpf_ktime_get_boot_ns */
	__u64 size;
	__u64 generation;
	__u64 object; /* seal refusals: map or link id, inode, bpf cmd */
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__s32 ret;
	__u32 flags;
	__u16 op;
	__u8 verdict;
	__u8 reason;
	__u8 digest[32];
	__u32 elf_status; /* enum kg_elf_status of the name parse */
	__u32 _pad;
	char name[KG_ELF_NAME_MAX];      /* .modinfo name= */
	char this_name[KG_ELF_NAME_MAX]; /* struct module.name */
	char entry[KG_NAME_LEN];         /* the entry that matched */
	char comm[16];
};

/*
 * Policy inner maps: kg_policy_key -> kg_policy_val (template only). Every
 * map swapped into kg_policy is created from this spec, so it has the same
 * flags (map-in-map insertion requires it).
 */
struct kg_policy_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_RDONLY_PROG);
	__uint(max_entries, 1);
	__type(key, struct kg_policy_key);
	__type(value, struct kg_policy_val);
} kg_policy_inner SEC(".maps") = {}; /* a definition, not a tentative one: see below */

/*
 * Slot 0 -> the policy in force (a kg_policy_inner-shaped hash map).
 *
 * The template above is initialized so that the compiler emits it, and
 * the full key and value types with it, where it stands. Left tentative,
 * it would be emitted after the first function that uses kg_policy, whose
 * BTF then describes the template's key and value as forward declarations
 * of unknown size, which no loader accepts.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct kg_policy_inner);
} kg_policy SEC(".maps");

/*
 * name_eq compares two NUL-padded names over n bytes, exactly. Parsed names
 * have KG_ELF_NAME_MAX bytes, entry names KG_NAME_LEN. Entry names come
 * folded from user space ('-' written as '_', as modprobe takes them); the
 * names in an image are compared as the kernel registers them: kbuild never
 * leaves a '-' in them, and a module calling itself "nf-tables" would load
 * beside nf_tables, so it matches no entry.
 */
static __always_inline bool name_eq(const char *a, const char *b, const int n)
{
	for (int i = 0; i < n; i++) {
		if (a[i] != b[i])
			return false;
		if (!a[i])
			return true;
	}
	return true;
}

/*
 * The marker the kernel looks for at the end of a signed module
 * (MODULE_SIG_STRING), without its NUL.
 */
#define KG_SIG_MARKER "~Module signature appended~\n"
#define KG_SIG_MARKER_LEN (sizeof(KG_SIG_MARKER) - 1)

/*
 * has_signature reports whether the image ends with the marker of an
 * appended module signature. Whether the signature verifies is the
 * kernel's check (module.sig_enforce); a compressed file hides it.
 */
static __always_inline bool has_signature(const char *buf, __u64 size)
{
	const char want[] = KG_SIG_MARKER;
	char tail[KG_SIG_MARKER_LEN];

	if (size < KG_SIG_MARKER_LEN)
		return false;
	if (bpf_probe_read_kernel(tail, sizeof(tail), buf + size - KG_SIG_MARKER_LEN))
		return false;
	for (int i = 0; i < (int)KG_SIG_MARKER_LEN; i++)
		if (tail[i] != want[i])
			return false;
	return true;
}

static __always_inline bool is_elf(const char *buf)
{
	__u32 magic = 0;

	bpf_probe_read_kernel(&magic, sizeof(magic), buf);
	return magic == 0x464c457f; /* "\x7fELF" little-endian */
}

/*
 * kg_measure records the size and digest of the image in buf and, when it
 * is an ELF image, its two names, parsed with the names scratch n of slot
 * (NULL when the scratch lookup failed).
 */
static __always_inline void kg_measure(struct kg_event *e, const char *buf, __u64 size,
				       struct kg_elf_names *n, __u32 slot)
{
	e->size = size;
	if (kg_sha256(buf, size, e->digest, slot) == 0)
		e->flags |= KG_F_DIGEST;

	if (!is_elf(buf)) {
		e->flags |= KG_F_COMPRESSED;
		return;
	}
	if (has_signature(buf, size))
		e->flags |= KG_F_SIGNED;
	if (!n) {
		e->elf_status = KG_ELF_NO_SCRATCH;
		return;
	}
	e->elf_status = kg_elf_names(buf, size, n, slot);
	__builtin_memcpy(e->name, n->modinfo_name, sizeof(e->name));
	__builtin_memcpy(e->this_name, n->this_module_name, sizeof(e->this_name));
	/* Only both names count, as in allowlist.Match. */
	if (e->elf_status == KG_ELF_OK) {
		e->flags |= KG_F_NAMES;
		if (!name_eq(e->name, e->this_name, KG_ELF_NAME_MAX))
			e->flags |= KG_F_MISMATCH;
	}
}

/*
 * kg_judge sets e's verdict, reason, generation and matching entry from the
 * measured e and policy, a kg_policy_inner-shaped map (NULL when none is
 * installed, which refuses). The caller sets KG_F_FOREIGN in e first.
 */
static __always_inline void kg_judge(struct kg_event *e, void *policy)
{
	struct kg_policy_key key = {};
	struct kg_policy_val *ent, *meta;
	bool audit = false;

	if (!policy) {
		e->reason = KG_REASON_NO_POLICY;
		goto deny;
	}
	key.kind = KG_KEY_META;
	meta = bpf_map_lookup_elem(policy, &key);
	if (!meta) {
		e->reason = KG_REASON_NO_POLICY;
		goto deny;
	}
	audit = meta->mode == KG_MODE_AUDIT;
	e->generation = meta->generation;

	if ((meta->index & KG_REQ_HOST_NS) && (e->flags & KG_F_FOREIGN)) {
		e->reason = KG_REASON_FOREIGN_NS;
		goto deny;
	}
	if ((meta->index & KG_REQ_SIGNED) && !(e->flags & KG_F_SIGNED)) {
		e->reason = KG_REASON_UNSIGNED;
		goto deny;
	}

	if (!(e->flags & KG_F_DIGEST)) {
		e->reason = KG_REASON_HASH_FAILED;
		goto deny;
	}

	key.kind = KG_KEY_DIGEST;
	__builtin_memcpy(key.data, e->digest, sizeof(e->digest));
	ent = bpf_map_lookup_elem(policy, &key);
	if (ent && (e->flags & KG_F_COMPRESSED)) {
		/* No names in compressed bytes: the digest binds the entry. */
		__builtin_memcpy(e->entry, ent->name, sizeof(e->entry));
		e->reason = KG_REASON_COMPRESSED_DIGEST;
		goto allow;
	}
	if (e->flags & KG_F_COMPRESSED) {
		e->reason = KG_REASON_COMPRESSED;
		goto deny;
	}
	if (!(e->flags & KG_F_NAMES)) {
		e->reason = KG_REASON_BAD_ELF;
		goto deny;
	}
	if (e->flags & KG_F_MISMATCH) {
		e->reason = KG_REASON_NAME_MISMATCH;
		goto deny;
	}
	if (ent && name_eq(e->name, ent->name, KG_NAME_LEN)) {
		__builtin_memcpy(e->entry, ent->name, sizeof(e->entry));
		e->reason = KG_REASON_DIGEST;
		goto allow;
	}
	/*
	 * Name-only entries: the entry's folded name is the key, and the
	 * image's name is looked up as it is (see name_eq). A digest listed
	 * under another name does not stop an entry that admits this name
	 * without digests, as in allowlist.Match.
	 */
	__builtin_memset(key.data, 0, sizeof(key.data));
	key.kind = KG_KEY_NAME;
	for (int i = 0; i < KG_NAME_LEN; i++) {
		char c = e->name[i];

		if (!c)
			break;
		key.data[i] = c;
	}
	if (ent) {
		/* Say which entry holds the digest, if no name-only entry admits it. */
		__builtin_memcpy(e->entry, ent->name, sizeof(e->entry));
		e->reason = KG_REASON_NAME_DIFFERS;
	} else {
		e->reason = KG_REASON_NOT_LISTED;
	}
	ent = bpf_map_lookup_elem(policy, &key);
	if (ent) {
		__builtin_memcpy(e->entry, ent->name, sizeof(e->entry));
		e->reason = KG_REASON_NAME;
		goto allow;
	}

deny:
	e->verdict = audit ? KG_VERDICT_AUDIT : KG_VERDICT_BLOCKED;
	return;
allow:
	e->verdict = KG_VERDICT_ALLOWED;
}

#endif /* KG_DECIDE_H */
