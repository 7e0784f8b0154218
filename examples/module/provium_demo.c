// SPDX-License-Identifier: GPL-2.0
/*
 * provium_demo: the example module of Provium's examples/module suite.
 *
 * A misc character device, /dev/provium_demo, holding up to 256 bytes:
 *   read()                  the stored bytes
 *   write()                 replace them; writing "provium-warn" trips a WARN_ON,
 *                           the kind of bug the suite shows Provium catching
 *   DEMO_GET_LEN  (ioctl)   the stored length, into a __u32
 *   DEMO_SET_FROM (ioctl)   replace the bytes from a user pointer held in a
 *                           struct demo_xfer (a struct that holds a pointer)
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/uaccess.h>

struct demo_xfer {
	__u64 ptr;
	__u32 len;
	__u32 flags;
};

#define DEMO_GET_LEN _IOR('P', 1, __u32)		  /* 0x80045001 */
#define DEMO_SET_FROM _IOW('P', 2, struct demo_xfer) /* 0x40105002 */
#define DEMO_WARN_MAGIC "provium-warn"

static DEFINE_MUTEX(demo_lock);
static char demo_buf[256];
static size_t demo_len;

static ssize_t demo_read(struct file *file, char __user *ubuf, size_t n, loff_t *off)
{
	ssize_t ret;

	mutex_lock(&demo_lock);
	ret = simple_read_from_buffer(ubuf, n, off, demo_buf, demo_len);
	mutex_unlock(&demo_lock);
	return ret;
}

static ssize_t demo_write(struct file *file, const char __user *ubuf, size_t n, loff_t *off)
{
	char tmp[sizeof(demo_buf)];

	if (n > sizeof(tmp))
		return -EFBIG;
	if (copy_from_user(tmp, ubuf, n))
		return -EFAULT;
	WARN_ON(n == sizeof(DEMO_WARN_MAGIC) - 1 && !memcmp(tmp, DEMO_WARN_MAGIC, n));
	mutex_lock(&demo_lock);
	memcpy(demo_buf, tmp, n);
	demo_len = n;
	mutex_unlock(&demo_lock);
	return n;
}

static long demo_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct demo_xfer x;
	__u32 len;
	long ret = 0;

	switch (cmd) {
	case DEMO_GET_LEN:
		mutex_lock(&demo_lock);
		len = demo_len;
		mutex_unlock(&demo_lock);
		return put_user(len, (__u32 __user *)arg);
	case DEMO_SET_FROM:
		if (copy_from_user(&x, (void __user *)arg, sizeof(x)))
			return -EFAULT;
		if (x.len > sizeof(demo_buf) || x.flags)
			return -EINVAL;
		mutex_lock(&demo_lock);
		if (copy_from_user(demo_buf, u64_to_user_ptr(x.ptr), x.len))
			ret = -EFAULT;
		else
			demo_len = x.len;
		mutex_unlock(&demo_lock);
		return ret;
	}
	return -ENOTTY;
}

static const struct file_operations demo_fops = {
	.owner = THIS_MODULE,
	.read = demo_read,
	.write = demo_write,
	.unlocked_ioctl = demo_ioctl,
	.llseek = default_llseek,
};

static struct miscdevice demo_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "provium_demo",
	.fops = &demo_fops,
	.mode = 0666,
};

module_misc_device(demo_dev);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Provium's example: a misc device driven from Lua tests");
