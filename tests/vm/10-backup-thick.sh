# Full and incremental backups of a thick LV while another process keeps
# writing to it: every restored generation equals its snapshot's content,
# and a normal run removes its snapshot and logs its fill. Writes land in
# the first 8 MiB, so the 50% snapshot cannot overflow.
source "$ROOT/tests/vm/lib.sh"
make_vg vgthick 96
lvcreate -q -L 32M -n data vgthick >/dev/null
backups_equal_snapshots vgthick thick
