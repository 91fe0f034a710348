# The same as 10-backup-thick for a thin LV: its snapshots are thin,
# sharing the pool, activated with -ay -K.
source "$ROOT/tests/vm/lib.sh"
make_vg vgthin 96
lvcreate -q -L 64M -T vgthin/pool >/dev/null
lvcreate -q -V 32M -T vgthin/pool -n data >/dev/null
backups_equal_snapshots vgthin thin
