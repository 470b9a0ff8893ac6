// SPDX-License-Identifier: GPL-2.0-only
/*
 * hideme: a test module that hides itself the way rootkits do, for
 * kmodguard's hidden-module tests. On init it unlinks itself from the
 * kernel's list of modules (so /proc/modules, lsmod and the kallsyms of
 * modules no longer show it) and deletes its kobject (so /sys/module has no
 * entry for it). It stays loaded and does nothing else. It cannot be
 * unloaded (delete_module finds modules on that list): reboot.
 *
 * Build it against a kernel's headers: make -C /lib/modules/REL/build M=$PWD
 */
#include <linux/module.h>
#include <linux/kobject.h>
#include <linux/list.h>

static int __init hideme_init(void)
{
	list_del_init(&THIS_MODULE->list);
	kobject_del(&THIS_MODULE->mkobj.kobj);
	return 0;
}

module_init(hideme_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmodguard test: a module that hides itself");
