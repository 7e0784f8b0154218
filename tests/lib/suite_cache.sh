# Sourced by tests/check and bench/*: each suite runs on a cache of its own,
# seeded with the kernel it needs, and on nothing else of the user's (no
# PROVIUM_KERNEL, PROVIUM_MODULES or PROVIUM_CACHE of theirs, no newest file
# of their ~/.cache/provium: their own kernels and initrds live there).
# The kernel is Debian's cloud kernel, the one `provium kernel fetch` names
# (downloaded into the user's cache once, like `make check`'s `kernel
# ensure`), linked into each suite's cache. Run from the source tree.

unset PROVIUM_KERNEL PROVIUM_MODULES PROVIUM_CACHE

# suite_kernel: set SUITE_KERNEL (the kernel's directory in the user's
# cache) and SUITE_KERNEL_VERSION, or say why not and return 1.
suite_kernel() {
    local out
    out=$(./provium kernel fetch 2>&1) || { echo "$out" >&2; return 1; }
    SUITE_KERNEL_VERSION=$(sed -n 's/^kernel //p' <<<"$out")
    SUITE_KERNEL=$(dirname "$(sed -n 's/^  vmlinuz //p' <<<"$out")")
    if [ -z "$SUITE_KERNEL_VERSION" ] || [ ! -f "$SUITE_KERNEL/vmlinuz" ]; then
        echo "provium kernel fetch named no kernel: $out" >&2
        return 1
    fi
}

# suite_cache DIR: make DIR an XDG_CACHE_HOME whose provium cache holds only
# the suite's kernel (call suite_kernel first); prints nothing.
suite_cache() {
    mkdir -p "$1/provium/kernels"
    chmod 700 "$1" "$1/provium"
    ln -sfn "$SUITE_KERNEL" "$1/provium/kernels/$SUITE_KERNEL_VERSION"
}
