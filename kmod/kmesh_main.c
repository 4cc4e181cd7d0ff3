// SPDX-License-Identifier: GPL-2.0
/*
 * kmesh.ko: module glue: version, read-only counters, test parameters.
 *
 * /sys/module/kmesh/version            MODULE_VERSION
 * /sys/module/kmesh/parameters/<name>  counters (0444) and the test-only
 *                                      destination rewrite (0644)
 */

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

#include "kmesh_defer.h"

struct kmesh_defer_stats kmesh_defer_stats;

unsigned short kmesh_test_dport_from;
unsigned short kmesh_test_dport_to;
module_param_named(test_dport_from, kmesh_test_dport_from, ushort, 0644);
MODULE_PARM_DESC(test_dport_from, "test only: deferred connects to this port go to test_dport_to (0 = off)");
module_param_named(test_dport_to, kmesh_test_dport_to, ushort, 0644);
MODULE_PARM_DESC(test_dport_to, "test only: see test_dport_from");

static int kmesh_counter_set(const char *val, const struct kernel_param *kp)
{
	return -EPERM;
}

static int kmesh_counter_get(char *buf, const struct kernel_param *kp)
{
	return scnprintf(buf, PAGE_SIZE, "%ld\n", atomic_long_read((atomic_long_t *)kp->arg));
}

static const struct kernel_param_ops kmesh_counter_ops = {
	.set = kmesh_counter_set,
	.get = kmesh_counter_get,
};

#define KMESH_COUNTER(name, desc)                                                      \
	module_param_cb(name, &kmesh_counter_ops, &kmesh_defer_stats.name, 0444); \
	MODULE_PARM_DESC(name, desc)

KMESH_COUNTER(active, "sockets holding the kmesh_defer ULP now");
KMESH_COUNTER(deferred, "connect(2) calls deferred");
KMESH_COUNTER(connected, "deferred connects performed");
KMESH_COUNTER(connect_errors, "deferred connects that failed synchronously");
KMESH_COUNTER(iter_iovec, "first sends carried by ITER_IOVEC");
KMESH_COUNTER(iter_ubuf, "first sends carried by ITER_UBUF");
KMESH_COUNTER(iter_other, "first sends carried by other iterators or without data");
KMESH_COUNTER(recv_trigger, "deferred connects triggered by a receive");
KMESH_COUNTER(rewrites, "destinations rewritten by the hook");

static int __init kmesh_init(void)
{
	int err = kmesh_defer_init();

	if (err) {
		pr_err("kmesh: register ULP %s: %d\n", KMESH_DEFER_ULP_NAME, err);
		return err;
	}
	pr_info("kmesh: %s loaded, ULP %s registered\n", KMESH_KO_VERSION, KMESH_DEFER_ULP_NAME);
	return 0;
}

static void __exit kmesh_exit(void)
{
	kmesh_defer_exit();
	pr_info("kmesh: unloaded\n");
}

module_init(kmesh_init);
module_exit(kmesh_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Kmesh authors");
MODULE_DESCRIPTION("Kmesh: deferred TCP connect (ULP kmesh_defer) for L7 destination decisions");
MODULE_VERSION(KMESH_KO_VERSION);
