/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * readid.h: what the guard makes of a kernel_read_file id, the id that
 * security_kernel_read_file and security_kernel_post_read_file are called
 * with, and of a kernel_load_data id (security_kernel_load_data and
 * security_kernel_post_load_data). The ids' values are the running
 * kernel's (CO-RE enum value relocations). Include after vmlinux.h.
 */
#ifndef KG_READID_H
#define KG_READID_H

/* The running kernel's value of an enumerator (CO-RE enum value relocation). */
#define kg_enum_value(type, name) __builtin_preserve_enum_value(*(typeof(type) *)name, 1)
/* Whether the running kernel has the enumerator (CO-RE enum value existence). */
#define kg_enum_exists(type, name) __builtin_preserve_enum_value(*(typeof(type) *)name, 0)

/*
 * READING_MODULE_COMPRESSED, of newer kernels (Debian's 7.2): the read of
 * a MODULE_INIT_COMPRESSED_FILE module, whose decompressed image the kernel
 * then shows to kernel_post_read_file as READING_MODULE. In a type of its
 * own, out of vmlinux.h's enum: kernels up to 6.12 have no such id, and the
 * guard asks whether this one does before it uses the value.
 */
enum kernel_read_file_id___kg_compressed {
	READING_MODULE_COMPRESSED = 0,
};

enum kg_read_kind {
	/* Not a module: firmware, kexec images, IMA policy, x509
	 * certificates, READING_UNKNOWN (out-of-tree drivers read data with
	 * it). */
	KG_READ_OTHER = 0,
	/* Decided as a module load: READING_MODULE, and every id this guard
	 * does not know (fail closed: a new id of a newer kernel could be
	 * another road for modules). */
	KG_READ_MODULE = 1,
	/* READING_MODULE_COMPRESSED: a compressed file, decided once the
	 * kernel shows the decompressed image as READING_MODULE. */
	KG_READ_COMPRESSED = 2,
};

/* kg_read_kind returns what the guard makes of a read of id. */
static __always_inline enum kg_read_kind kg_read_kind(__u32 id)
{
	if (id == kg_enum_value(enum kernel_read_file_id, READING_MODULE))
		return KG_READ_MODULE;
	if (id == kg_enum_value(enum kernel_read_file_id, READING_UNKNOWN) ||
	    id == kg_enum_value(enum kernel_read_file_id, READING_FIRMWARE) ||
	    id == kg_enum_value(enum kernel_read_file_id, READING_KEXEC_IMAGE) ||
	    id == kg_enum_value(enum kernel_read_file_id, READING_KEXEC_INITRAMFS) ||
	    id == kg_enum_value(enum kernel_read_file_id, READING_POLICY) ||
	    id == kg_enum_value(enum kernel_read_file_id, READING_X509_CERTIFICATE))
		return KG_READ_OTHER;
	/* Only where the kernel has it: elsewhere the value below is poisoned
	 * by the loader, and this branch is dead to the verifier. */
	if (kg_enum_exists(enum kernel_read_file_id___kg_compressed, READING_MODULE_COMPRESSED) &&
	    id == kg_enum_value(enum kernel_read_file_id___kg_compressed,
				READING_MODULE_COMPRESSED))
		return KG_READ_COMPRESSED;
	return KG_READ_MODULE;
}

/*
 * kg_load_kind returns what the guard makes of a load of id, by the same
 * rule: LOADING_MODULE and every id not known here are module loads; the
 * known others (firmware from the sysfs fallback loader, kexec images,
 * IMA policy, x509 certificates, LOADING_UNKNOWN) are not.
 */
static __always_inline enum kg_read_kind kg_load_kind(__u32 id)
{
	if (id == kg_enum_value(enum kernel_load_data_id, LOADING_MODULE))
		return KG_READ_MODULE;
	if (id == kg_enum_value(enum kernel_load_data_id, LOADING_UNKNOWN) ||
	    id == kg_enum_value(enum kernel_load_data_id, LOADING_FIRMWARE) ||
	    id == kg_enum_value(enum kernel_load_data_id, LOADING_KEXEC_IMAGE) ||
	    id == kg_enum_value(enum kernel_load_data_id, LOADING_KEXEC_INITRAMFS) ||
	    id == kg_enum_value(enum kernel_load_data_id, LOADING_POLICY) ||
	    id == kg_enum_value(enum kernel_load_data_id, LOADING_X509_CERTIFICATE))
		return KG_READ_OTHER;
	return KG_READ_MODULE;
}

#endif /* KG_READID_H */
