# The harness itself: device-mapper, a loop-backed VG, thick and thin
# snapshots and lvs' JSON report work in this VM.
source "$ROOT/tests/vm/lib.sh"
make_vg vgsmoke 64
lvcreate -q -L 16M -n data vgsmoke >/dev/null
lvcreate -q -L 8M -s -n snap vgsmoke/data >/dev/null
lvcreate -q -L 16M -T vgsmoke/pool >/dev/null
lvcreate -q -V 16M -T vgsmoke/pool -n thin >/dev/null
lvcreate -q -s -ay -K -n thinsnap vgsmoke/thin >/dev/null
# Captured first: `lvs | grep -q` under pipefail fails at random when grep
# quits at its match and lvs's later writes meet a closed pipe.
json=$(lvs --reportformat json vgsmoke)
grep -q '"lv_name":"thinsnap"' <<<"$json" || fail "no thin snapshot in lvs' JSON: $json"
[[ -b /dev/vgsmoke/snap && -b /dev/vgsmoke/thinsnap ]] || fail "no device nodes for the snapshots"
[[ $(snapshots vgsmoke | sort | tr '\n' ' ') == "snap thinsnap " ]] || fail "snapshots: $(snapshots vgsmoke)"
