#!/usr/bin/env bash
# Installs what the LVM test VM needs, skipping what is already there:
#   Debian: qemu-system-x86 (the emulator), linux-image-amd64 (a kernel with
#           device-mapper), lvm2, thin-provisioning-tools, busybox-static
#           (virtme-ng's init), e2fsprogs, fdisk (sfdisk), kmod, and for
#           the mount and NBD case fuse3, nbdkit and nbd-client
#   PyPI:   virtme-ng (the `vng` command that boots the kernel over the host's
#           own root filesystem, read-only)
# Needs root (apt-get) and the package registries. Safe to run again.
set -euo pipefail

need_pkgs=()
for spec in qemu-system-x86:qemu-system-x86_64 lvm2:lvcreate \
            thin-provisioning-tools:thin_check busybox-static:busybox \
            e2fsprogs:mkfs.ext4 fdisk:sfdisk kmod:modprobe \
            fuse3:fusermount3 nbdkit:nbdkit nbd-client:nbd-client; do
    pkg=${spec%%:*} cmd=${spec#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/sbin/$cmd" ] && ! [ -x "/usr/sbin/$cmd" ]; then
        need_pkgs+=("$pkg")
    fi
done
if ! compgen -G '/boot/vmlinuz-*' >/dev/null; then
    need_pkgs+=(linux-image-amd64)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "vm-setup: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # qemu-system-x86 must come with a qemu-utils of its own release (qemu-img
    # and qemu-io, for the NBD tests): a machine may carry a newer backported
    # qemu-utils that Breaks the release's qemu-system-common, and apt does not
    # downgrade on its own. Ask for the emulator's version of qemu-utils.
    apt_flags=()
    if [[ " ${need_pkgs[*]} " == *" qemu-system-x86 "* ]]; then
        qemu_version=$(apt-cache policy qemu-system-x86 2>/dev/null | awk '/Candidate:/ { print $2 }')
        if [[ -n $qemu_version && $qemu_version != "(none)" ]]; then
            need_pkgs+=("qemu-utils=$qemu_version")
            apt_flags+=(--allow-downgrades)
        else
            need_pkgs+=(qemu-utils)
        fi
    fi
    apt-get install -y -qq --no-install-recommends "${apt_flags[@]}" "${need_pkgs[@]}" >/dev/null
fi

if ! command -v vng >/dev/null 2>&1; then
    echo "vm-setup: installing virtme-ng from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check virtme-ng
    hash -r
fi
command -v vng >/dev/null || { echo "vm-setup: vng is not on PATH after pip install" >&2; exit 1; }
ls /boot/vmlinuz-* >/dev/null
echo "vm-setup: ready ($(vng --version 2>/dev/null | head -1); kernel $(ls /boot/vmlinuz-* | head -1))" >&2
