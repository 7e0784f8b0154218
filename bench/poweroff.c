/* The baseline guest of bench/boot: an /init that powers off at once. */
#include <sys/reboot.h>
#include <unistd.h>

int main(void)
{
    reboot(RB_POWER_OFF);
    return 0;
}
