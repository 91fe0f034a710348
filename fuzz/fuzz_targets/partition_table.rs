//! Fuzzes `disk_partitions::PartitionTable::read`, the MBR/GPT parser that reads
//! the first sectors of a logical volume (a domU's disk: its content is
//! the guest's, so untrusted). Any input must give a table or an error,
//! never a panic, and every partition found must lie on the device,
//! outside sector 0.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use disk_partitions::PartitionTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = PartitionTable::read(Cursor::new(data), Path::new("fuzz.img")) else {
        return;
    };
    for p in table.partitions() {
        assert!(p.size > 0, "empty partition accepted: {p:?}");
        assert!(p.start > 0, "partition over the table accepted: {p:?}");
        assert!(
            p.end() <= data.len() as u64,
            "partition past the device's {} bytes accepted: {p:?}",
            data.len()
        );
    }
});
