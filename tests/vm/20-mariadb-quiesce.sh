# End to end (issue 5): a MariaDB datadir on an LV under a continuous insert
# load, backed up twice with --lvm and --quiesce mysql; generation 2 is
# restored into a new volume and a second MariaDB started on it. Its table
# is clean (FLUSH TABLES WITH READ LOCK closed it before the snapshot) and
# holds exactly the rows committed when the lock was taken, as counted by a
# post-freeze hook while the lock was held.
source "$ROOT/tests/vm/lib.sh"
for p in mariadbd mariadb-install-db mariadb mariadb-admin; do
    command -v $p >/dev/null || fail "$p is not installed: run scripts/services-setup.sh"
done
make_vg vgdb 192
lvcreate -q -L 64M -n mysql vgdb >/dev/null
mkfs.ext4 -q /dev/vgdb/mysql
mkdir -p /tmp/db /tmp/db2 /tmp/store-db
mount /dev/vgdb/mysql /tmp/db
at_exit "umount /tmp/db"
at_exit "rm -rf /tmp/store-db"

# start_server DATADIR NAME: a private server on a socket, no network.
start_server() {
    mariadbd --no-defaults --user=root --datadir="$1" --socket=/tmp/$2.sock \
        --skip-networking --pid-file=/tmp/$2.pid --log-error=/tmp/$2.err \
        --log-bin=binlog --server-id=1 --innodb-buffer-pool-size=16M \
        --innodb-log-file-size=8M >/dev/null 2>&1 &
    at_exit "mariadb-admin --no-defaults -uroot -S /tmp/$2.sock shutdown 2>/dev/null; sleep 1"
    for _ in $(seq 240); do
        mariadb-admin --no-defaults -uroot -S /tmp/$2.sock ping >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    cat /tmp/$2.err >&2
    fail "MariaDB ($2) did not start"
}
sql() { # sql NAME STATEMENT
    mariadb --no-defaults -uroot -S "/tmp/$1.sock" -N -B -e "$2"
}

log "installing a datadir on vgdb/mysql"
mariadb-install-db --no-defaults --user=root --datadir=/tmp/db/data --skip-test-db \
    --auth-root-authentication-method=socket --innodb-log-file-size=8M >/tmp/install.log 2>&1 ||
    { cat /tmp/install.log; fail "mariadb-install-db failed"; }
start_server /tmp/db/data db
sql db "CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(100)) ENGINE=MyISAM;
        CREATE USER backup@localhost IDENTIFIED BY 'b4ck up'; GRANT RELOAD, REPLICATION CLIENT ON *.* TO backup@localhost;"

log "continuous inserts on one connection"
(yes "INSERT INTO app.t (v) VALUES (REPEAT('x', 90));" |
    mariadb --no-defaults -uroot -S /tmp/db.sock >/dev/null 2>&1 || true) &
load=$!
at_exit "kill $load 2>/dev/null; pkill -f 'yes INSERT' 2>/dev/null; wait $load 2>/dev/null"
for _ in $(seq 60); do
    (($(sql db "SELECT COUNT(*) FROM app.t") > 100)) && break
    sleep 0.5
done

store=/tmp/store-db/db
for gen in 1 2; do
    sleep 2
    MYSQL_PWD='b4ck up' blockdiff-backup "$store" --lvm vgdb/mysql --snapshot-size 50% \
        --quiesce "mysql:socket=/tmp/db.sock,user=backup,lock-wait-timeout=10" \
        --quiesce "hook:post-freeze=mariadb --no-defaults -uroot -S /tmp/db.sock -N -B -e 'SELECT COUNT(*) FROM app.t' > /tmp/count.$gen" \
        2>/tmp/backup.$gen.log || { cat /tmp/backup.$gen.log; fail "backup $gen failed"; }
    cat /tmp/backup.$gen.log
    grep -q 'FLUSH TABLES WITH READ LOCK' /tmp/backup.$gen.log || fail "no lock statement in the log"
    grep -q 'UNLOCK TABLES' /tmp/backup.$gen.log || fail "no unlock statement in the log"
done
after=$(sql db "SELECT COUNT(*) FROM app.t")
kill $load 2>/dev/null || true
frozen_count=$(cat /tmp/count.2)
log "rows when generation 2 was frozen: $frozen_count; rows at the end: $after"
((after > frozen_count)) || fail "the load did not go on after the freeze ($after rows)"
meta=$store.2.meta.json
cat "$meta"
grep -q '"mysql.binlog_position"' "$meta" || fail "no binlog position in $meta"
window=$(sed -n 's/.*"freeze_window_seconds": "\(.*\)".*/\1/p' "$meta")
[[ -n $window ]] || fail "no freeze window in $meta"
echo "freeze window of generation 2: $window s"
assert_no_snapshots vgdb

log "restoring generation 2 into a new volume and starting a second server on it"
lvcreate -q -L 64M -n restored vgdb >/dev/null
blockdiff-restore /dev/vgdb/restored --from "$store" --generation 2
mount /dev/vgdb/restored /tmp/db2
at_exit "umount /tmp/db2"
rm -f /tmp/db2/data/*.pid
start_server /tmp/db2/data db2
check=$(sql db2 "CHECK TABLE app.t" | awk -F'\t' '{ print $3 ": " $4 }' | tr '\n' ' ')
echo "CHECK TABLE app.t: $check"
[[ $check == "status: OK " ]] || fail "the restored table is not clean: $check"
if grep -Ei 'crashed|not closed properly|Recovering table|repair' /tmp/db2.err; then
    fail "the restored server recovered a torn table"
fi
restored=$(sql db2 "SELECT COUNT(*) FROM app.t")
[[ $restored == "$frozen_count" ]] || fail "restored $restored rows, $frozen_count were committed at the freeze"
echo "restored rows: $restored, as committed at the freeze"
