/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * elf.h: a kernel module's two names, read from its ELF image in BPF.
 *
 * A module has two names, and a forged module makes them differ:
 *   - the value of the first "name=" entry of .modinfo, which the kernel
 *     checks against module_blacklist= and friends;
 *   - struct module.name in .gnu.linkonce.this_module (offset 24, 56 bytes
 *     on 64-bit), the name the module actually registers under.
 *
 *   struct kg_elf_names *names = ...;   (map value or stack; 136 bytes)
 *   int status = kg_elf_names(buf, size, names, 0);
 *
 * buf is a kernel address read only with bpf_probe_read_kernel, as in
 * sha256.h: the char *buf of the kernel_post_load_data and
 * kernel_post_read_file LSM hooks. kg_elf_names returns one of enum
 * kg_elf_status. On KG_ELF_OK both names are set; on the three KG_ELF_NO_*
 * statuses the image is well formed but a name is absent, and
 * names->flags says which name was found. Every other status is an error
 * and the names must not be trusted.
 *
 * The walk mirrors the Go reference, kmod.ParseNames, which follows
 * kernel/module/main.c: sections are found by name through e_shstrndx,
 * skipping section 0; a duplicate .modinfo or .gnu.linkonce.this_module, or
 * one without SHF_ALLOC, is an error (6.12 refuses both); every section
 * name must be NUL-terminated inside the name table; .modinfo is a run of
 * NUL-terminated "key=value" strings, possibly padded with NULs, and the
 * first entry that starts with "name=" wins; a .modinfo that does not end
 * with a NUL is an error. The lsm/bpftest tests hold the two to the same
 * answers on every module of Debian's 6.1 and 6.12 kernels and on crafted
 * and truncated images. Beyond the Go reference, kg_elf_names refuses what
 * exceeds its bounds (KG_ELF_TOO_MANY_SECTIONS, KG_ELF_TOO_LARGE,
 * KG_ELF_NAME_TOO_LONG); no real module comes near them.
 *
 * Bounded everywhere: every offset and size read from the image is checked
 * against size (without overflow) before anything is read; more than
 * KG_ELF_MAX_SECTIONS sections are refused, not walked in part; .modinfo is
 * scanned an entry at a time (bpf_probe_read_kernel_str, at most
 * KG_ELF_SCAN_CHUNK bytes a step), up to KG_ELF_MAX_MODINFO bytes. Every
 * loop is a bpf_loop (5.17+), so the verifier sees each body once: about 2k
 * instructions in all, on 6.1, 6.12 and 6.18. Run time on the development
 * host: ~3 us for dummy.ko, ~100-140 us for option.ko and its 76 KB
 * .modinfo. Working state lives in the per-CPU array kg_elf_scratch,
 * claimed per call as in sha256.h (a call that finds it taken returns
 * KG_ELF_BUSY); include the header once per object.
 */
#ifndef KG_ELF_H
#define KG_ELF_H

#include "kg_bpf.h"

/*
 * KG_ELF_MAX_SECTIONS bounds e_shnum. The largest in Debian's 6.1 and 6.12
 * trees is 94 (kvm.ko); an image with more sections is refused with
 * KG_ELF_TOO_MANY_SECTIONS rather than walked in part.
 */
#ifndef KG_ELF_MAX_SECTIONS
#define KG_ELF_MAX_SECTIONS 256
#endif

/*
 * KG_ELF_MAX_MODINFO bounds the .modinfo section and the section name
 * table. The largest .modinfo in Debian's trees is 76 KB (option.ko, all
 * USB ids); larger is refused with KG_ELF_TOO_LARGE.
 */
#ifndef KG_ELF_MAX_MODINFO
#define KG_ELF_MAX_MODINFO (1U << 20)
#endif

#define KG_ELF_SCAN_CHUNK 256

/* KG_ELF_NAME_MAX is the size of each name buffer, NUL included. */
#define KG_ELF_NAME_MAX 64
/* MODULE_NAME_LEN and offsetof(struct module, name) on 64-bit kernels. */
#define KG_MODULE_NAME_LEN 56
#define KG_MODULE_NAME_OFF 24

enum kg_elf_status {
	KG_ELF_OK = 0,
	KG_ELF_NO_MODINFO = 1,      /* no .modinfo section */
	KG_ELF_NO_MODINFO_NAME = 2, /* .modinfo has no name= entry */
	KG_ELF_NO_THIS_MODULE = 3,  /* no .gnu.linkonce.this_module section */
	/* Errors from here on. */
	KG_ELF_NOT_ELF = 10,           /* no \x7fELF magic */
	KG_ELF_UNSUPPORTED = 11,       /* not ELF64 little-endian */
	KG_ELF_TRUNCATED = 12,         /* a header, table or section is outside the image */
	KG_ELF_MALFORMED = 13,         /* inconsistent headers, names or sections */
	KG_ELF_TOO_MANY_SECTIONS = 14, /* e_shnum > KG_ELF_MAX_SECTIONS */
	KG_ELF_TOO_LARGE = 15,         /* .modinfo or names > KG_ELF_MAX_MODINFO */
	KG_ELF_NAME_TOO_LONG = 16,     /* name= value of KG_ELF_NAME_MAX bytes or more */
	KG_ELF_FAULT = 17,             /* bpf_probe_read_kernel failed */
	KG_ELF_NO_SCRATCH = 18,        /* per-CPU scratch lookup failed */
	KG_ELF_BUSY = 19,              /* another call owns this CPU's scratch */
};

#define KG_ELF_HAVE_MODINFO_NAME (1U << 0)
#define KG_ELF_HAVE_THIS_MODULE (1U << 1)

/* What kg_elf_names reports. Names are NUL-terminated and NUL-padded. */
struct kg_elf_names {
	char modinfo_name[KG_ELF_NAME_MAX];     /* .modinfo name= */
	char this_module_name[KG_ELF_NAME_MAX]; /* struct module.name */
	__u32 flags;                            /* KG_ELF_HAVE_* */
	__u32 shnum;                            /* e_shnum, for reports */
};

/* ELF64 layouts (the ELF format, not kernel types: no CO-RE). */
struct kg_elf64_ehdr {
	__u8 e_ident[16];
	__u16 e_type;
	__u16 e_machine;
	__u32 e_version;
	__u64 e_entry;
	__u64 e_phoff;
	__u64 e_shoff;
	__u32 e_flags;
	__u16 e_ehsize;
	__u16 e_phentsize;
	__u16 e_phnum;
	__u16 e_shentsize;
	__u16 e_shnum;
	__u16 e_shstrndx;
};

struct kg_elf64_shdr {
	__u32 sh_name;
	__u32 sh_type;
	__u64 sh_flags;
	__u64 sh_addr;
	__u64 sh_offset;
	__u64 sh_size;
	__u32 sh_link;
	__u32 sh_info;
	__u64 sh_addralign;
	__u64 sh_entsize;
};

#define KG_ELFCLASS64 2
#define KG_ELFDATA2LSB 1
#define KG_ET_REL 1
#define KG_SHT_NOBITS 8
#define KG_SHF_ALLOC 2

/* One section the parser looks for. */
struct kg_elf_sec {
	__u64 off;
	__u64 size;
	__u32 type;
	__u32 found;
};

/* Per-call state, one slot per CPU. */
struct kg_elf_scratch {
	__u64 buf;     /* kernel address of the image */
	__u64 size;    /* image size */
	__u64 shoff;   /* section header table */
	__u64 str_off; /* section name table */
	__u64 str_size;
	__u64 str_term; /* names at or past this offset are unterminated */
	struct kg_elf_sec modinfo;
	struct kg_elf_sec this_module;
	__s32 status;   /* error found inside a loop, or KG_ELF_OK */
	__u32 at_start; /* .modinfo scan: s->pos starts an entry */
	__u32 name_len; /* length of the name= value */
	__u32 done;     /* .modinfo scan: name= found */
	__u64 pos;      /* .modinfo scan: next offset in the section */
	struct kg_elf64_shdr shdr;
	__u8 tmp[KG_ELF_SCAN_CHUNK];
	struct kg_elf_names names;
	__u64 busy; /* set while a kg_elf_names call owns the slot */
};

#ifndef KG_SCRATCH_SLOTS
#define KG_SCRATCH_SLOTS 1 /* see sha256.h */
#endif

/* kg_elf_scratch: slot -> this CPU's ELF walk state for that slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KG_SCRATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct kg_elf_scratch);
} kg_elf_scratch SEC(".maps");

static __always_inline struct kg_elf_scratch *kg_elf_state(__u32 slot)
{
	return bpf_map_lookup_elem(&kg_elf_scratch, &slot);
}

/* kg_elf_in reports whether [off, off+len) lies inside an image of size bytes. */
static __always_inline bool kg_elf_in(__u64 off, __u64 len, __u64 size)
{
	return off <= size && len <= size - off;
}

/* kg_elf_read reads n <= KG_ELF_SCAN_CHUNK bytes at buf+off into s->tmp. */
static __always_inline long kg_elf_read(struct kg_elf_scratch *s, __u64 off, __u64 n)
{
	if (n > KG_ELF_SCAN_CHUNK)
		n = KG_ELF_SCAN_CHUNK;
	barrier_var(n);
	return bpf_probe_read_kernel(s->tmp, n, (const void *)(s->buf + off));
}

/* The callback context of the name table and .modinfo loops. */
struct kg_elf_loop {
	struct kg_elf_scratch *s;
};

/*
 * bpf_loop callback: byte i, counted back from the end of the section name
 * table. Names that start after the table's last NUL are not terminated, so
 * the loop stops at that NUL; a well-formed table ends with one.
 */
static long kg_elf_strtab_cb(__u32 i, void *ctx)
{
	struct kg_elf_scratch *s = ((struct kg_elf_loop *)ctx)->s;
	__u64 off = s->str_size - 1 - i;
	__u8 c;

	if (bpf_probe_read_kernel(&c, 1, (const void *)(s->buf + s->str_off + off))) {
		s->status = KG_ELF_FAULT;
		return 1;
	}
	if (c)
		return 0;
	s->str_term = off + 1;
	return 1;
}

/*
 * kg_elf_name_is reports whether the first avail bytes of s->tmp start with
 * the string want, its NUL included. want is a literal, so the unrolled
 * comparison folds into immediates.
 */
#define kg_elf_name_is(s, avail, want) \
	((avail) >= sizeof(want) && kg_elf_eq((s)->tmp, want, sizeof(want)))

static __always_inline bool kg_elf_eq(const __u8 *a, const char *b, const int n)
{
	bool eq = true;

#pragma clang loop unroll(full)
	for (int i = 0; i < n; i++)
		eq &= a[i] == (__u8)b[i];
	return eq;
}

/* bpf_loop callback: looks at section header i+1. */
static long kg_elf_section_cb(__u32 i, void *ctx)
{
	struct kg_elf_scratch *s = ((struct kg_elf_loop *)ctx)->s;
	struct kg_elf_sec *sec;
	__u64 name, avail;

	if (!s)
		return 1;
	if (bpf_probe_read_kernel(
		    &s->shdr, sizeof(s->shdr),
		    (const void *)(s->buf + s->shoff + ((__u64)i + 1) * sizeof(s->shdr)))) {
		s->status = KG_ELF_FAULT;
		return 1;
	}
	name = s->shdr.sh_name;
	if (name >= s->str_size || name >= s->str_term) {
		s->status = KG_ELF_MALFORMED;
		return 1;
	}
	/* Longest name looked for: ".gnu.linkonce.this_module" and its NUL. */
	avail = s->str_size - name;
	if (avail > 32)
		avail = 32;
	__builtin_memset(s->tmp, 0, 32);
	if (kg_elf_read(s, s->str_off + name, avail)) {
		s->status = KG_ELF_FAULT;
		return 1;
	}
	if (kg_elf_name_is(s, avail, ".modinfo"))
		sec = &s->modinfo;
	else if (kg_elf_name_is(s, avail, ".gnu.linkonce.this_module"))
		sec = &s->this_module;
	else
		return 0;
	if (sec->found || !(s->shdr.sh_flags & KG_SHF_ALLOC)) {
		s->status = KG_ELF_MALFORMED;
		return 1;
	}
	sec->found = 1;
	sec->type = s->shdr.sh_type;
	sec->off = s->shdr.sh_offset;
	sec->size = s->shdr.sh_size;
	return 0;
}

/*
 * bpf_loop callback: one step of the .modinfo scan, from s->pos. A step
 * reads with bpf_probe_read_kernel_str, which stops after the first NUL, so
 * it takes a whole entry (or one NUL of padding) at a time; an entry longer
 * than KG_ELF_SCAN_CHUNK - 1 bytes takes several steps. The scan stops at
 * the first entry that starts with "name=" and copies its value. It relies
 * on the section's last byte being a NUL (checked before): every entry then
 * ends inside the section, and a read that runs up to the section's end
 * holds a whole entry.
 */
static long kg_elf_modinfo_cb(__u32 i, void *ctx)
{
	struct kg_elf_scratch *s = ((struct kg_elf_loop *)ctx)->s;
	__u64 *z = (__u64 *)s->tmp;
	__u64 left, n;
	long r;
	bool whole;

	if (s->pos >= s->modinfo.size)
		return 1;
	left = s->modinfo.size - s->pos;
	n = left < KG_ELF_SCAN_CHUNK ? left : KG_ELF_SCAN_CHUNK;
	barrier_var(n);
	if (n > KG_ELF_SCAN_CHUNK)
		return 1;
#pragma clang loop unroll(full)
	/* Room for "name=", the longest value kept and its NUL, zeroed. */
	for (int j = 0; j < (5 + KG_ELF_NAME_MAX + 7) / 8; j++)
		z[j] = 0;
	r = bpf_probe_read_kernel_str(s->tmp, n, (const void *)(s->buf + s->modinfo.off + s->pos));
	if (r <= 0) {
		s->status = KG_ELF_FAULT;
		return 1;
	}
	/*
	 * r < n: the entry's NUL is at r - 1. r == n: the helper cut the
	 * string at n - 1 bytes, unless the read reached the section's end.
	 */
	whole = r < n || n == left;
	if (s->at_start && r >= 6 && s->tmp[0] == 'n' && s->tmp[1] == 'a' && s->tmp[2] == 'm' &&
	    s->tmp[3] == 'e' && s->tmp[4] == '=') {
		s->done = 1;
		s->name_len = whole ? r - 6 : KG_ELF_SCAN_CHUNK;
		/* The helper's NUL and the zeroed tail pad the copy. */
		__builtin_memcpy(s->names.modinfo_name, s->tmp + 5, KG_ELF_NAME_MAX - 1);
		return 1;
	}
	if (whole) {
		s->pos += r;
		s->at_start = 1;
	} else {
		s->pos += n - 1;
		s->at_start = 0;
	}
	return 0;
}

/* kg_elf_section_ok checks that a found section's bytes are in the image. */
static __always_inline int kg_elf_section_ok(struct kg_elf_scratch *s, struct kg_elf_sec *sec)
{
	if (sec->type == KG_SHT_NOBITS)
		return KG_ELF_MALFORMED;
	if (!kg_elf_in(sec->off, sec->size, s->size))
		return KG_ELF_TRUNCATED;
	return KG_ELF_OK;
}

/* kg_elf_walk does the work of kg_elf_names into s->names. */
static __always_inline enum kg_elf_status kg_elf_walk(struct kg_elf_scratch *s, const void *buf,
						      __u64 size)
{
	struct kg_elf64_ehdr *eh = (struct kg_elf64_ehdr *)s->tmp;
	struct kg_elf_loop lp = { .s = s };
	__u64 shnum, shstrndx, n;
	int err;

	s->buf = (__u64)buf;
	s->size = size;

	if (size < 4)
		return KG_ELF_NOT_ELF;
	n = size < sizeof(*eh) ? size : sizeof(*eh);
	if (kg_elf_read(s, 0, n))
		return KG_ELF_FAULT;
	if (eh->e_ident[0] != 0x7f || eh->e_ident[1] != 'E' || eh->e_ident[2] != 'L' ||
	    eh->e_ident[3] != 'F')
		return KG_ELF_NOT_ELF;
	if (size < sizeof(*eh))
		return KG_ELF_TRUNCATED;
	if (eh->e_ident[4] != KG_ELFCLASS64 || eh->e_ident[5] != KG_ELFDATA2LSB)
		return KG_ELF_UNSUPPORTED;
	if (eh->e_type != KG_ET_REL)
		return KG_ELF_MALFORMED;
	if (eh->e_shentsize != sizeof(struct kg_elf64_shdr) || eh->e_shnum == 0)
		return KG_ELF_MALFORMED;
	shnum = eh->e_shnum;
	shstrndx = eh->e_shstrndx;
	s->shoff = eh->e_shoff;
	s->names.shnum = shnum;
	if (!kg_elf_in(s->shoff, shnum * sizeof(struct kg_elf64_shdr), size))
		return KG_ELF_TRUNCATED;
	if (shstrndx == 0 || shstrndx >= shnum)
		return KG_ELF_MALFORMED;
	if (shnum > KG_ELF_MAX_SECTIONS)
		return KG_ELF_TOO_MANY_SECTIONS;

	/* The section name table. */
	if (bpf_probe_read_kernel(&s->shdr, sizeof(s->shdr),
				  (const void *)(s->buf + s->shoff + shstrndx * sizeof(s->shdr))))
		return KG_ELF_FAULT;
	if (s->shdr.sh_type == KG_SHT_NOBITS)
		return KG_ELF_MALFORMED;
	s->str_off = s->shdr.sh_offset;
	s->str_size = s->shdr.sh_size;
	if (!kg_elf_in(s->str_off, s->str_size, size))
		return KG_ELF_TRUNCATED;
	if (s->str_size > KG_ELF_MAX_MODINFO)
		return KG_ELF_TOO_LARGE;
	s->str_term = 0;
	bpf_loop(s->str_size, kg_elf_strtab_cb, &lp, 0);
	if (s->status)
		return s->status;

	/* Find .modinfo and .gnu.linkonce.this_module. */
	bpf_loop(shnum - 1, kg_elf_section_cb, &lp, 0);
	if (s->status)
		return s->status;

	if (s->modinfo.found) {
		err = kg_elf_section_ok(s, &s->modinfo);
		if (err)
			return err;
		if (s->modinfo.size > KG_ELF_MAX_MODINFO)
			return KG_ELF_TOO_LARGE;
		/*
		 * A last entry without its NUL would make the kernel read on
		 * past the section: refused, wherever name= is.
		 */
		if (s->modinfo.size) {
			__u8 last;

			if (bpf_probe_read_kernel(
				    &last, 1,
				    (const void *)(s->buf + s->modinfo.off + s->modinfo.size - 1)))
				return KG_ELF_FAULT;
			if (last)
				return KG_ELF_MALFORMED;
		}
		bpf_loop(s->modinfo.size, kg_elf_modinfo_cb, &lp, 0);
		if (s->status)
			return s->status;
		if (s->done) {
			if (s->name_len >= KG_ELF_NAME_MAX) {
				__builtin_memset(s->names.modinfo_name, 0, KG_ELF_NAME_MAX);
				return KG_ELF_NAME_TOO_LONG;
			}
			s->names.flags |= KG_ELF_HAVE_MODINFO_NAME;
		}
	}

	if (s->this_module.found) {
		err = kg_elf_section_ok(s, &s->this_module);
		if (err)
			return err;
		if (s->this_module.size < KG_MODULE_NAME_OFF + KG_MODULE_NAME_LEN)
			return KG_ELF_MALFORMED;
		if (kg_elf_read(s, s->this_module.off + KG_MODULE_NAME_OFF, KG_MODULE_NAME_LEN))
			return KG_ELF_FAULT;
		err = KG_ELF_MALFORMED; /* until a NUL is found */
		for (int j = 0; j < KG_MODULE_NAME_LEN; j++) {
			if (s->tmp[j] == 0) {
				err = KG_ELF_OK;
				break;
			}
			s->names.this_module_name[j] = s->tmp[j];
		}
		if (err)
			return err;
		s->names.flags |= KG_ELF_HAVE_THIS_MODULE;
	}

	if (!s->modinfo.found)
		return KG_ELF_NO_MODINFO;
	if (!(s->names.flags & KG_ELF_HAVE_MODINFO_NAME))
		return KG_ELF_NO_MODINFO_NAME;
	if (!s->this_module.found)
		return KG_ELF_NO_THIS_MODULE;
	return KG_ELF_OK;
}

/*
 * kg_elf_names reads the two names of the module image of size bytes at the
 * kernel address buf into *out and returns an enum kg_elf_status.
 */
static __noinline enum kg_elf_status kg_elf_names(const void *buf, __u64 size,
						  struct kg_elf_names *out, __u32 slot)
{
	struct kg_elf_scratch *s = kg_elf_state(slot);
	enum kg_elf_status status;

	if (!s)
		return KG_ELF_NO_SCRATCH;
	/* Claimed atomically, as in sha256.h: see "Preemption" there. */
	if (__sync_val_compare_and_swap(&s->busy, 0, 1) != 0)
		return KG_ELF_BUSY;
	__builtin_memset(&s->modinfo, 0, sizeof(s->modinfo));
	__builtin_memset(&s->this_module, 0, sizeof(s->this_module));
	__builtin_memset(&s->names, 0, sizeof(s->names));
	s->status = KG_ELF_OK;
	s->pos = 0;
	s->at_start = 1;
	s->name_len = 0;
	s->done = 0;

	status = kg_elf_walk(s, buf, size);
	__builtin_memcpy(out, &s->names, sizeof(*out));
	s->busy = 0;
	return status;
}

#undef kg_elf_name_is

#endif /* KG_ELF_H */
