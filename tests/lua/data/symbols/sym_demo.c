/* A stand-in for a kernel with debug info (tests/lua/symbols.test.lua):
 * built with gcc -g into a program (a vmlinux's kind of ELF file, its
 * symbols' values are addresses) and an object file (a module's .ko's kind:
 * relocatable, each section from 0). demo_fault's marked line is the one a
 * frame at its faulting instruction must name. */
#include <stdlib.h>

__attribute__((noinline)) int demo_fault(volatile int *p)
{
	int v = *p;

	if (v == 42)
		__builtin_trap(); /* FAULT */
	return v + 1;
}

__attribute__((noinline, section(".text.demo_cold"))) int demo_caller(volatile int *p)
{
	int r = demo_fault(p); /* CALL */

	return r * 2;
}

int main(void)
{
	static volatile int x = 1;

	return demo_caller(&x) == 4 ? EXIT_SUCCESS : EXIT_FAILURE;
}
