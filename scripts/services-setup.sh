#!/usr/bin/env bash
# Installs what the real-service tests need: a MariaDB server and client
# (mariadbd, mariadb-install-db, mariadb-admin, mariadb) and Debian's cron
# daemon for the quiesce crate, and OpenSSH's server and client for the
# remote-backup tests (which start a private sshd on loopback), and for
# blockdiff-mount and blockdiff-nbd Debian's fuse3 (fusermount3), nbdkit
# (which serves blockdiff's plugin) and qemu-utils (qemu-img, qemu-io), and
# libfaketime's faketime, with which the retention tests make backups on
# the days of a calendar, and thin-provisioning-tools (thin_restore,
# thin_delta), against which lvm-snap's reading of thin_delta is tested.
# Idempotent and quiet: packages already present are not touched, apt-get
# runs only when something is missing. Run as root (CI does, before
# the tests).
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1; }

have mariadbd || have mysqld || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
have mariadb || have mysql || missing+=(mariadb-client)
have cron || [ -x /usr/sbin/cron ] || missing+=(cron)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
have ssh || missing+=(openssh-client)
have sha256sum || missing+=(coreutils)
have fusermount3 || missing+=(fuse3)
have qemu-img || missing+=(qemu-utils)
have nbdkit || missing+=(nbdkit)
have mkfs.ext4 || missing+=(e2fsprogs)
have faketime || missing+=(faketime)
{ have thin_delta && have thin_restore; } || [ -x /usr/sbin/thin_delta ] || missing+=(thin-provisioning-tools)

if [ ${#missing[@]} -eq 0 ]; then
    echo "services-setup: mariadb-server, mariadb-client, cron, openssh, fuse3, nbdkit, qemu-utils, faketime and thin-provisioning-tools are already installed"
    exit 0
fi

echo "services-setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
# Do not start the packaged services: the tests start private instances, and
# containers/CI machines often have no init system to start them with.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod 755 "$policy"
    created_policy=1
fi
cleanup() { [ "$created_policy" -eq 0 ] || "${sudo_cmd[@]}" rm -f "$policy"; }
trap cleanup EXIT

"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "services-setup: done"
