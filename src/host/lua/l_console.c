/* The console socket of a VM (QEMU listens on it; every byte is also in the
 * console log from power-on): the C primitives under _provium_c.console,
 * with the Console and ConsoleStream types in lua/console.lua. */
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "l_provium.h"
#include "vm.h"

#define PV_CONN_MT "provium.console_conn"

struct conn {
    int fd;
};

static struct conn *checkconn(lua_State *L, int i)
{
    struct conn *c = luaL_checkudata(L, i, PV_CONN_MT);
    if (c->fd < 0)
        luaL_error(L, "console closed");
    return c;
}

static int conn_close(lua_State *L)
{
    struct conn *c = luaL_checkudata(L, 1, PV_CONN_MT);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    return 0;
}

/* console.connect(vm) -> conn: the primary console's socket (ttyS0 or hvc0) */
static int l_connect(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    if (vm->state != VM_BOOTED && vm->state != VM_PAUSED)
        return luaL_error(L, "console: vm `%s` is %s", vm->name, vm_state_name(vm->state));
    struct conn *c = lua_newuserdatauv(L, sizeof(*c), 0);
    c->fd = -1;
    luaL_setmetatable(L, PV_CONN_MT);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    vm_console_socket(vm, a.sun_path, sizeof(a.sun_path));
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        return luaL_error(L, "console: vm `%s`: connect %s: %s", vm->name, a.sun_path,
                          strerror(errno));
    return 1;
}

/* console.recv(conn, timeout_s) -> data | nil (timeout) | false (end of stream) */
static int l_recv(lua_State *L)
{
    struct conn *c = checkconn(L, 1);
    double t = luaL_checknumber(L, 2);
    struct pollfd p = {c->fd, POLLIN, 0};
    int n = poll(&p, 1, vm_wait_ms(t)); /* negative: until the test's deadline */
    if (n == 0) {
        lua_pushnil(L);
        return 1;
    }
    char buf[65536];
    ssize_t r = n < 0 ? -1 : read(c->fd, buf, sizeof(buf));
    if (r > 0) {
        lua_pushlstring(L, buf, (size_t)r);
        return 1;
    }
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushboolean(L, 0); /* reset or hang-up: the VM rebooted or stopped */
    return 1;
}

/* console.send(conn, data, timeout_s, drain) -> bytes written. With drain,
 * also wait until QEMU has read them (the caller is about to hang up, and
 * QEMU drops what it had not read from a client that left). */
static int l_send(lua_State *L)
{
    struct conn *c = checkconn(L, 1);
    size_t len, off = 0;
    const char *data = luaL_checklstring(L, 2, &len);
    double t = luaL_checknumber(L, 3);
    /* no timeout of its own: the test's deadline (vm_wait_ms) */
    int64_t deadline = now_ns() + (int64_t)vm_wait_ms(t > 0 ? t : -1) * 1000000;
    while (off < len) {
        struct pollfd p = {c->fd, POLLOUT, 0};
        int64_t left = (deadline - now_ns()) / 1000000;
        if (left <= 0)
            return luaL_error(L, "console:write: timed out after %d of %d bytes", (int)off,
                              (int)len);
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t w = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
        if (w < 0 && errno != EINTR && errno != EAGAIN)
            return luaL_error(L, "console:write: %s", strerror(errno));
        if (w > 0)
            off += (size_t)w;
    }
    int64_t until = now_ns() + 2000000000LL;
    int queued = 0;
    while (lua_toboolean(L, 4) && ioctl(c->fd, SIOCOUTQ, &queued) == 0 && queued > 0 &&
           now_ns() < until)
        poll(NULL, 0, 5);
    lua_pushinteger(L, (lua_Integer)len);
    return 1;
}

int luaopen_provium_console(lua_State *L)
{
    if (luaL_newmetatable(L, PV_CONN_MT)) {
        lua_pushcfunction(L, conn_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"connect", l_connect}, {"recv", l_recv}, {"send", l_send},
        {"close", conn_close},  {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
