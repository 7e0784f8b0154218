// SPDX-License-Identifier: GPL-2.0
/*
 * A module whose init never returns: with interrupts off it spins in
 * udelay's loop, so on a one-vCPU guest nothing else runs again (no timer,
 * no agent, no console output). tests/vm/hang.test.lua loads it to see the
 * hang watchdog fire (docs/debugging.md#hangs).
 */
#include <linux/delay.h>
#include <linux/irqflags.h>
#include <linux/module.h>

static int __init provium_hang_init(void)
{
	local_irq_disable();
	for (;;)
		mdelay(1);
	return 0;
}
module_init(provium_hang_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("spins with interrupts disabled (provium's hang test)");
