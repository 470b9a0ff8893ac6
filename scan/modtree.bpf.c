//go:build ignore
// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * modtree.bpf.c: a walk of the kernel's module address tree, for
 * `kmodguard scan`.
 *
 * Every loaded module's memory is in mod_tree (kernel/module/tree_lookup.c),
 * a latch tree that the kernel needs to tell which module an address
 * belongs to (backtraces, exception tables, kprobes): one node per module
 * (6.1, its core layout; the init layout while its init runs) or one per
 * memory type (6.4 on: text, data, rodata, ro_after_init, init_*). A module
 * that unlinks itself from the list of modules (which /proc/modules,
 * lsmod and delete_module read) and deletes its kobject (/sys/module)
 * is still there.
 *
 * kg_walk_mod_tree is run once, with BPF_PROG_TEST_RUN, not attached: user
 * space sets kg_mod_tree to &mod_tree (from /proc/kallsyms). It walks the
 * first of the latch tree's two red-black trees in order, one step per
 * bpf_loop iteration (parent pointers, no stack), and records each node's
 * struct module address, state and name in kg_seen. A tree being changed
 * under the walk can make it miss or repeat nodes, never run away: the
 * steps are bounded, and user space walks again before it reports.
 */
#include "vmlinux.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define KG_SCAN_MAX 8192
#define KG_SCAN_STEPS (1 << 20)

/* One node of mod_tree. */
struct kg_mod_seen {
	__u64 mod;  /* struct module address */
	__u64 node; /* the rb_node's address */
	__u32 state;
	__u32 pad;
	char name[56];
};

/* Walk states. */
enum kg_walk_mode {
	KG_WALK_DESCEND = 0, /* go down the left children of cur */
	KG_WALK_VISIT = 1,   /* record cur, then its right subtree */
	KG_WALK_ASCEND = 2,  /* cur's subtree is done: climb */
	KG_WALK_DONE = 3,
};

struct kg_walk {
	struct rb_node *cur;
	__u32 mode;
};

const struct kg_mod_seen *kg_unused_seen __attribute__((unused));

/* &mod_tree, set by user space at load time. */
volatile const __u64 kg_mod_tree = 0;

/*
 * The walk's first mode, KG_WALK_DESCEND (0), from a global that user space
 * may write: a value the verifier cannot know. Before 6.7 the verifier
 * checked a bpf_loop callback once, with the state of its first call, and
 * removed as dead the branches that a known first mode did not take
 * ("bpf: verify callbacks as if they are called unknown number of times");
 * on 6.1 the walk then stopped after two steps.
 */
__u32 kg_first_mode = KG_WALK_DESCEND;

/* Results: nodes recorded, steps taken, whether the walk finished. */
__u32 kg_count = 0;
__u32 kg_steps = 0;
__u32 kg_done = 0;
__u32 kg_overflow = 0;

/* kg_seen: index -> a node of mod_tree, kg_count of them. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KG_SCAN_MAX);
	__type(key, __u32);
	__type(value, struct kg_mod_seen);
} kg_seen SEC(".maps");

static __always_inline void kg_visit(struct rb_node *node)
{
	struct mod_tree_node *mtn;
	struct module *mod = NULL;
	struct kg_mod_seen *r;
	__u32 idx = kg_count;

	if (idx >= KG_SCAN_MAX) {
		kg_overflow = 1;
		return;
	}
	r = bpf_map_lookup_elem(&kg_seen, &idx);
	if (!r)
		return;
	/* tree[0] links node.node[0] of each mod_tree_node. */
	mtn = (struct mod_tree_node *)((char *)node -
				       KG_FIELD_OFFSET(((struct mod_tree_node *)0)->node));
	kg_read(mod, mtn->mod);
	r->mod = (__u64)mod;
	r->node = (__u64)node;
	r->state = (__u32)-1;
	r->name[0] = 0;
	if (mod) {
		kg_read(r->state, mod->state);
		bpf_probe_read_kernel_str(r->name, sizeof(r->name),
					  __builtin_preserve_access_index(&mod->name));
	}
	kg_count = idx + 1;
}

static long kg_step(__u32 i, void *ctx)
{
	struct kg_walk *w = ctx;
	/* A local copy: kg_read relocates every access in its argument. */
	struct rb_node *cur = w->cur;
	struct rb_node *next = NULL;
	unsigned long pc = 0;

	switch (w->mode) {
	case KG_WALK_DESCEND:
		kg_read(next, cur->rb_left);
		if (next)
			w->cur = next;
		else
			w->mode = KG_WALK_VISIT;
		return 0;
	case KG_WALK_VISIT:
		kg_visit(cur);
		kg_read(next, cur->rb_right);
		if (next) {
			w->cur = next;
			w->mode = KG_WALK_DESCEND;
		} else {
			w->mode = KG_WALK_ASCEND;
		}
		return 0;
	case KG_WALK_ASCEND:
		kg_read(pc, cur->__rb_parent_color);
		next = (struct rb_node *)(pc & ~3UL);
		if (!next) {
			w->mode = KG_WALK_DONE;
			return 1;
		}
		{
			struct rb_node *right = NULL;

			kg_read(right, next->rb_right);
			/* Coming up from the left: the parent is next in order. */
			if (right != cur)
				w->mode = KG_WALK_VISIT;
		}
		w->cur = next;
		return 0;
	}
	return 1;
}

SEC("raw_tracepoint/kg_scan")
int kg_walk_mod_tree(void *ctx)
{
	struct mod_tree_root *root = (struct mod_tree_root *)kg_mod_tree;
	struct kg_walk w = {};

	kg_count = 0;
	kg_done = 0;
	kg_overflow = 0;
	kg_steps = 0;
	if (!root)
		return 0;
	kg_read(w.cur, root->root.tree[0].rb_node);
	if (!w.cur) {
		kg_done = 1;
		return 0;
	}
	w.mode = kg_first_mode;
	kg_steps = bpf_loop(KG_SCAN_STEPS, kg_step, &w, 0);
	kg_done = w.mode == KG_WALK_DONE;
	return 0;
}
