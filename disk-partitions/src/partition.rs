//! Partition tables inside a volume, read without the kernel's help: MBR
//! (four primaries, and logical partitions in an extended partition's
//! chain, numbered from 5 as Linux numbers them) and GPT (checked header
//! and entry-array CRC32s, 512- or 4096-byte sectors, the backup header at
//! the end of the device when the primary is damaged).
//!
//! Every length read from the device is bounded before anything is
//! allocated for it, and a bad table is an [`Error::PartitionTable`]
//! naming the device and the offset of the bad structure, never a panic.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The sector size of an MBR: its LBAs count 512-byte sectors.
pub const MBR_SECTOR_SIZE: u64 = 512;
/// At most this many logical partitions are followed in an extended
/// partition's chain; a longer chain is reported as damaged (it loops).
pub const MAX_LOGICAL_PARTITIONS: usize = 256;
/// A GPT entry array larger than this is refused (the usual one is
/// 16 KiB: 128 entries of 128 bytes).
pub const MAX_GPT_ENTRY_ARRAY_BYTES: u64 = 1 << 20;

const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xAA];
const MBR_ENTRIES_OFFSET: usize = 446;
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const GPT_PROTECTIVE: u8 = 0xEE;
const GPT_MIN_HEADER_SIZE: u32 = 92;
const GPT_MIN_ENTRY_SIZE: u32 = 128;
const GPT_MAX_ENTRY_SIZE: u32 = 4096;

/// A GPT GUID as stored on disk (its first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the canonical text form, `0FC63DAF-8483-4772-8E79-3D69D8477DE4`.
    pub fn parse(text: &str) -> Option<Guid> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        let dashes_ok = text.len() == 36
            && [8, 13, 18, 23]
                .iter()
                .all(|&i| text.as_bytes().get(i) == Some(&b'-'));
        if !dashes_ok || hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut text_order = [0u8; 16];
        for (i, byte) in text_order.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        let mut disk = text_order;
        disk[0..4].reverse();
        disk[4..6].reverse();
        disk[6..8].reverse();
        Some(Guid(disk))
    }

    /// All zeros: an unused GPT entry.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]])
        )?;
        for (i, byte) in b[8..].iter().enumerate() {
            if i == 2 {
                f.write_str("-")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// GPT type GUIDs this crate names, with the description `sfdisk` gives.
const GPT_TYPES: &[(&str, &str)] = &[
    ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "Linux filesystem"),
    (
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        "Linux root (x86-64)",
    ),
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home"),
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap"),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM"),
    ("A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID"),
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System"),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot"),
    (
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        "Microsoft basic data",
    ),
];

/// GPT types that hold a Linux filesystem one would back up.
const GPT_LINUX_FILESYSTEMS: &[&str] = &[
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915",
];

/// A partition's type: an MBR system id or a GPT type GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionType {
    /// MBR system id (0x83 Linux, 0x82 swap, 0x05 extended, …).
    Mbr(u8),
    /// GPT partition type GUID.
    Gpt(Guid),
}

impl PartitionType {
    /// What the type means, as `sfdisk` names it, or `unknown`.
    pub fn description(&self) -> &'static str {
        match *self {
            PartitionType::Mbr(id) => match id {
                0x83 => "Linux",
                0x82 => "Linux swap",
                0x8e => "Linux LVM",
                0xfd => "Linux raid autodetect",
                0x05 => "Extended",
                0x0f => "W95 Ext'd (LBA)",
                0x85 => "Linux extended",
                0x07 => "HPFS/NTFS/exFAT",
                0x0b => "W95 FAT32",
                0x0c => "W95 FAT32 (LBA)",
                0x0e => "W95 FAT16 (LBA)",
                0xef => "EFI (FAT-12/16/32)",
                GPT_PROTECTIVE => "GPT",
                _ => "unknown",
            },
            PartitionType::Gpt(guid) => {
                let text = guid.to_string();
                GPT_TYPES
                    .iter()
                    .find(|(g, _)| *g == text)
                    .map_or("unknown", |(_, d)| d)
            }
        }
    }

    /// Whether it holds a Linux filesystem (MBR 0x83; GPT Linux
    /// filesystem, root or home), the kind of partition to back up.
    pub fn is_linux_filesystem(&self) -> bool {
        match *self {
            PartitionType::Mbr(id) => id == 0x83,
            PartitionType::Gpt(guid) => GPT_LINUX_FILESYSTEMS.contains(&guid.to_string().as_str()),
        }
    }

    /// An MBR extended partition (a container of logical partitions).
    pub fn is_extended(&self) -> bool {
        matches!(self, PartitionType::Mbr(0x05 | 0x0f | 0x85))
    }
}

impl fmt::Display for PartitionType {
    /// `Linux (0x83)` or `Linux filesystem (0FC63DAF-…)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionType::Mbr(id) => write!(f, "{} (0x{id:02x})", self.description()),
            PartitionType::Gpt(guid) => write!(f, "{} ({guid})", self.description()),
        }
    }
}

/// One partition, in bytes from the start of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Its number as Linux gives it: MBR primaries 1–4 by slot, logical
    /// partitions 5 onwards; GPT entries from 1 by slot.
    pub number: u32,
    /// Byte offset of its first byte.
    pub start: u64,
    /// Its length in bytes.
    pub size: u64,
    /// Its type.
    pub kind: PartitionType,
    /// The GPT partition name (empty for MBR).
    pub name: String,
}

impl Partition {
    /// One past its last byte.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Whether it holds a Linux filesystem (see
    /// [`PartitionType::is_linux_filesystem`]).
    pub fn is_linux_filesystem(&self) -> bool {
        self.kind.is_linux_filesystem()
    }
}

impl fmt::Display for Partition {
    /// `2: Linux filesystem, 30 MiB at offset 1048576 ('root')`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}, {} at offset {}",
            self.number,
            self.kind.description(),
            human_size(self.size),
            self.start
        )?;
        if !self.name.is_empty() {
            write!(f, " ('{}')", self.name)?;
        }
        Ok(())
    }
}

/// `30 MiB`, `512 bytes`, `1.5 GiB`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What a device's first sectors hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionTable {
    /// No partition table: a filesystem (or nothing) fills the device, so
    /// the whole device is mounted.
    None,
    /// An MBR ("dos") table.
    Mbr {
        /// Its partitions, primaries first, then logical ones.
        partitions: Vec<Partition>,
    },
    /// A GUID partition table.
    Gpt {
        /// The sector size its LBAs count: 512 or 4096.
        sector_size: u64,
        /// Whether the primary header was damaged and the backup header at
        /// the end of the device was read instead.
        from_backup: bool,
        /// Its used entries, by slot.
        partitions: Vec<Partition>,
    },
}

impl PartitionTable {
    /// Reads the partition table of a device or image; `path` names it in
    /// errors. A device whose first sector is not an MBR (no `0x55AA`
    /// signature, or boot flags other than 0x00 and 0x80, as in a FAT boot
    /// sector) has no table: [`PartitionTable::None`].
    pub fn read(reader: impl Read + Seek, path: &Path) -> Result<PartitionTable> {
        let mut device = Device::open(reader, path)?;
        if device.len < MBR_SECTOR_SIZE {
            return Ok(PartitionTable::None);
        }
        let sector = device.read_at(0, MBR_SECTOR_SIZE as usize, "the MBR")?;
        let Some(entries) = mbr_entries(&sector) else {
            return Ok(PartitionTable::None);
        };
        if entries.iter().any(|e| e.kind == GPT_PROTECTIVE) {
            return read_gpt(&mut device);
        }
        read_mbr(&mut device, &entries)
    }

    /// Its partitions (none for [`PartitionTable::None`]).
    pub fn partitions(&self) -> &[Partition] {
        match self {
            PartitionTable::None => &[],
            PartitionTable::Mbr { partitions } | PartitionTable::Gpt { partitions, .. } => {
                partitions
            }
        }
    }

    /// Partition `number`, if the table has it.
    pub fn partition(&self, number: u32) -> Option<&Partition> {
        self.partitions().iter().find(|p| p.number == number)
    }

    /// `none`, `dos` or `gpt`, as `sfdisk` labels tables.
    pub fn label(&self) -> &'static str {
        match self {
            PartitionTable::None => "none",
            PartitionTable::Mbr { .. } => "dos",
            PartitionTable::Gpt { .. } => "gpt",
        }
    }
}

/// A reader with its length and name, reading whole structures at offsets.
struct Device<'p, R> {
    reader: R,
    path: &'p Path,
    len: u64,
}

impl<R> Device<'_, R> {
    fn error(&self, offset: u64, detail: impl Into<String>) -> Error {
        Error::PartitionTable {
            path: self.path.to_owned(),
            offset,
            detail: detail.into(),
        }
    }
}

impl<'p, R: Read + Seek> Device<'p, R> {
    fn open(mut reader: R, path: &'p Path) -> Result<Self> {
        let len = reader.seek(SeekFrom::End(0)).map_err(|source| Error::Io {
            path: path.to_owned(),
            op: "finding the size of",
            source,
        })?;
        Ok(Device { reader, path, len })
    }

    /// `len` bytes at `offset` (the callers bound `len`); `what` names
    /// the structure in the error of a device too short to hold it.
    fn read_at(&mut self, offset: u64, len: usize, what: &str) -> Result<Vec<u8>> {
        let fits = offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= self.len);
        if !fits {
            return Err(self.error(
                offset,
                format!(
                    "truncated: {what} needs {len} bytes here, but the device ends at {}",
                    self.len
                ),
            ));
        }
        let mut buf = vec![0; len];
        let io_error = |source: io::Error| Error::Io {
            path: self.path.to_owned(),
            op: "reading the partition table of",
            source,
        };
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(io_error)?;
        match self.reader.read_exact(&mut buf) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.error(offset, format!("truncated: the device ends inside {what}")))
            }
            Err(e) => Err(io_error(e)),
        }
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One 16-byte MBR (or EBR) entry.
#[derive(Debug, Clone, Copy)]
struct MbrEntry {
    kind: u8,
    first_lba: u32,
    sectors: u32,
}

/// The four entries of an MBR or EBR sector, or `None` if the sector is
/// not one (no signature, or a boot flag that no MBR has).
fn mbr_entries(sector: &[u8]) -> Option<[MbrEntry; 4]> {
    if sector[510..512] != BOOT_SIGNATURE {
        return None;
    }
    let mut entries = [MbrEntry {
        kind: 0,
        first_lba: 0,
        sectors: 0,
    }; 4];
    for (i, entry) in entries.iter_mut().enumerate() {
        let e = &sector[MBR_ENTRIES_OFFSET + 16 * i..][..16];
        if e[0] != 0 && e[0] != 0x80 {
            return None;
        }
        *entry = MbrEntry {
            kind: e[4],
            first_lba: le32(e, 8),
            sectors: le32(e, 12),
        };
    }
    Some(entries)
}

fn read_mbr<R: Read + Seek>(
    device: &mut Device<'_, R>,
    entries: &[MbrEntry; 4],
) -> Result<PartitionTable> {
    let mut partitions = Vec::new();
    let mut extended = Vec::new();
    for (slot, entry) in (1u32..).zip(entries) {
        if entry.kind == 0 || entry.sectors == 0 {
            continue;
        }
        let entry_offset = (MBR_ENTRIES_OFFSET + 16 * (slot as usize - 1)) as u64;
        let partition = mbr_partition(device, entry_offset, slot, 0, entry)?;
        if partition.kind.is_extended() {
            extended.push((u64::from(entry.first_lba), partition.size / MBR_SECTOR_SIZE));
        }
        partitions.push(partition);
    }
    let mut next_number = 5;
    for (first_lba, sectors) in extended {
        for logical in read_logical_partitions(device, first_lba, sectors, next_number)? {
            next_number = logical.number + 1;
            partitions.push(logical);
        }
    }
    Ok(PartitionTable::Mbr { partitions })
}

/// The partition an MBR or EBR entry describes, its start relative to
/// sector `base_lba`, checked to lie on the device after the table.
fn mbr_partition<R>(
    device: &Device<'_, R>,
    entry_offset: u64,
    number: u32,
    base_lba: u64,
    entry: &MbrEntry,
) -> Result<Partition> {
    let first = base_lba + u64::from(entry.first_lba);
    if first == 0 {
        return Err(device.error(
            entry_offset,
            format!("partition {number} starts at sector 0, on the partition table itself"),
        ));
    }
    let partition = Partition {
        number,
        start: first * MBR_SECTOR_SIZE,
        size: u64::from(entry.sectors) * MBR_SECTOR_SIZE,
        kind: PartitionType::Mbr(entry.kind),
        name: String::new(),
    };
    check_on_device(device, entry_offset, &partition)?;
    Ok(partition)
}

fn check_on_device<R>(device: &Device<'_, R>, entry_offset: u64, p: &Partition) -> Result<()> {
    if p.end() > device.len {
        return Err(device.error(
            entry_offset,
            format!(
                "partition {} ends at byte {}, beyond the end of the device ({} bytes)",
                p.number,
                p.end(),
                device.len
            ),
        ));
    }
    Ok(())
}

/// Follows the chain of extended boot records of the extended partition
/// at `ext_lba`: each holds one logical partition (relative to itself)
/// and a link to the next record (relative to the extended partition).
fn read_logical_partitions<R: Read + Seek>(
    device: &mut Device<'_, R>,
    ext_lba: u64,
    ext_sectors: u64,
    first_number: u32,
) -> Result<Vec<Partition>> {
    let mut logical = Vec::new();
    let mut visited = HashSet::new();
    let mut ebr_lba = ext_lba;
    loop {
        let offset = ebr_lba * MBR_SECTOR_SIZE;
        if !visited.insert(ebr_lba) {
            return Err(device.error(
                offset,
                "the chain of extended boot records loops back to this sector",
            ));
        }
        if visited.len() > MAX_LOGICAL_PARTITIONS {
            return Err(device.error(
                offset,
                format!("more than {MAX_LOGICAL_PARTITIONS} extended boot records in one chain"),
            ));
        }
        let sector = device.read_at(offset, MBR_SECTOR_SIZE as usize, "an extended boot record")?;
        let Some(entries) = mbr_entries(&sector) else {
            return Err(device.error(
                offset,
                "not an extended boot record (no 0x55AA signature, or a bad boot flag)",
            ));
        };
        let mut next = None;
        for (slot, entry) in entries.iter().enumerate() {
            if entry.kind == 0 || entry.sectors == 0 {
                continue;
            }
            let entry_offset = offset + (MBR_ENTRIES_OFFSET + 16 * slot) as u64;
            if PartitionType::Mbr(entry.kind).is_extended() {
                if next.is_none() {
                    next = Some((entry_offset, ext_lba + u64::from(entry.first_lba)));
                }
                continue;
            }
            let number = first_number + logical.len() as u32;
            logical.push(mbr_partition(device, entry_offset, number, ebr_lba, entry)?);
        }
        match next {
            None => return Ok(logical),
            Some((entry_offset, lba)) => {
                if lba >= ext_lba + ext_sectors {
                    return Err(device.error(
                        entry_offset,
                        format!(
                            "the next extended boot record is at sector {lba}, outside the extended partition (sectors {ext_lba}..{})",
                            ext_lba + ext_sectors
                        ),
                    ));
                }
                ebr_lba = lba;
            }
        }
    }
}

/// A protective MBR announced a GPT: finds its header at LBA 1 of 512- or
/// 4096-byte sectors, and falls back to the backup header at the last LBA
/// if the primary is damaged.
fn read_gpt<R: Read + Seek>(device: &mut Device<'_, R>) -> Result<PartitionTable> {
    for sector_size in [512u64, 4096] {
        if device.len < 2 * sector_size {
            continue;
        }
        let signature = device.read_at(sector_size, GPT_SIGNATURE.len(), "the GPT signature")?;
        if signature != GPT_SIGNATURE {
            continue;
        }
        return match read_gpt_at(device, sector_size, 1) {
            Ok(partitions) => Ok(PartitionTable::Gpt {
                sector_size,
                from_backup: false,
                partitions,
            }),
            Err(primary_error) => {
                let last_lba = device.len / sector_size - 1;
                match read_gpt_at(device, sector_size, last_lba) {
                    Ok(partitions) => Ok(PartitionTable::Gpt {
                        sector_size,
                        from_backup: true,
                        partitions,
                    }),
                    Err(_) => Err(primary_error),
                }
            }
        };
    }
    Err(device.error(
        MBR_SECTOR_SIZE,
        "the protective MBR (type 0xEE) announces a GPT, but there is no GPT header (\"EFI PART\") at byte 512 or 4096",
    ))
}

/// The used entries of the GPT whose header is at `header_lba`.
fn read_gpt_at<R: Read + Seek>(
    device: &mut Device<'_, R>,
    sector_size: u64,
    header_lba: u64,
) -> Result<Vec<Partition>> {
    let header_offset = header_lba * sector_size;
    let header = device.read_at(header_offset, sector_size as usize, "the GPT header")?;
    let bad = |detail: String| Error::PartitionTable {
        path: device.path.to_owned(),
        offset: header_offset,
        detail,
    };
    if &header[..8] != GPT_SIGNATURE {
        return Err(bad("no GPT header signature \"EFI PART\"".into()));
    }
    let header_size = le32(&header, 12);
    if !(u64::from(GPT_MIN_HEADER_SIZE)..=sector_size).contains(&u64::from(header_size)) {
        return Err(bad(format!(
            "GPT header size {header_size} is outside {GPT_MIN_HEADER_SIZE}..={sector_size}"
        )));
    }
    let stored_crc = le32(&header, 16);
    let mut zeroed = header[..header_size as usize].to_vec();
    zeroed[16..20].fill(0);
    let computed_crc = crc32(&zeroed);
    if stored_crc != computed_crc {
        return Err(bad(format!(
            "GPT header CRC32 is {stored_crc:08x}, but its content gives {computed_crc:08x}"
        )));
    }
    let my_lba = le64(&header, 24);
    if my_lba != header_lba {
        return Err(bad(format!(
            "GPT header says it is at LBA {my_lba}, but it was read at LBA {header_lba}"
        )));
    }
    let entries_lba = le64(&header, 72);
    let entry_count = le32(&header, 80);
    let entry_size = le32(&header, 84);
    let entries_crc = le32(&header, 88);
    if !(GPT_MIN_ENTRY_SIZE..=GPT_MAX_ENTRY_SIZE).contains(&entry_size)
        || !entry_size.is_power_of_two()
    {
        return Err(bad(format!(
            "GPT entry size {entry_size} is not a power of two in {GPT_MIN_ENTRY_SIZE}..={GPT_MAX_ENTRY_SIZE}"
        )));
    }
    let array_bytes = u64::from(entry_count) * u64::from(entry_size);
    if array_bytes > MAX_GPT_ENTRY_ARRAY_BYTES {
        return Err(bad(format!(
            "GPT entry array of {entry_count} entries of {entry_size} bytes is larger than {MAX_GPT_ENTRY_ARRAY_BYTES} bytes"
        )));
    }
    let Some(array_offset) = entries_lba.checked_mul(sector_size) else {
        return Err(bad(format!(
            "GPT entry array LBA {entries_lba} is beyond any device"
        )));
    };
    let array = device.read_at(array_offset, array_bytes as usize, "the GPT entry array")?;
    let computed = crc32(&array);
    if computed != entries_crc {
        return Err(device.error(
            array_offset,
            format!(
                "GPT entry array CRC32 is {entries_crc:08x} in the header, but the entries give {computed:08x}"
            ),
        ));
    }
    let mut partitions = Vec::new();
    for (number, entry) in (1u32..).zip(array.chunks_exact(entry_size as usize)) {
        let entry_offset = array_offset + (u64::from(number) - 1) * u64::from(entry_size);
        let kind = Guid(entry[..16].try_into().expect("16 bytes"));
        if kind.is_zero() {
            continue;
        }
        let first = le64(entry, 32);
        let last = le64(entry, 40);
        let range = first
            .checked_mul(sector_size)
            .zip(last.checked_sub(first).and_then(|n| n.checked_add(1)))
            .and_then(|(start, sectors)| Some((start, sectors.checked_mul(sector_size)?)))
            .filter(|(start, size)| start.checked_add(*size).is_some());
        let Some((start, size)) = range else {
            return Err(device.error(
                entry_offset,
                format!("GPT partition {number} has LBAs {first}..={last}, which is no range"),
            ));
        };
        let name_units: Vec<u16> = (0..36)
            .map(|i| le16(entry, 56 + 2 * i))
            .take_while(|&u| u != 0)
            .collect();
        let partition = Partition {
            number,
            start,
            size,
            kind: PartitionType::Gpt(kind),
            name: String::from_utf16_lossy(&name_units),
        };
        check_on_device(device, entry_offset, &partition)?;
        partitions.push(partition);
    }
    Ok(partitions)
}

/// CRC-32 (IEEE 802.3, reflected), as GPT uses.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The device path for errors about a partition table.
pub(crate) fn table_error(path: &Path, offset: u64, detail: impl Into<String>) -> Error {
    Error::PartitionTable {
        path: PathBuf::from(path),
        offset,
        detail: detail.into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;
    use std::process::{Command, Stdio};

    const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    const SWAP: &str = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F";

    fn put_entry(sector: &mut [u8], slot: usize, kind: u8, first: u32, sectors: u32) {
        let e = &mut sector[MBR_ENTRIES_OFFSET + 16 * slot..][..16];
        e[4] = kind;
        e[8..12].copy_from_slice(&first.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
    }

    /// An image of `sectors` 512-byte sectors with an MBR of `primaries`
    /// `(type, first LBA, sectors)` and, in the extended primary if any,
    /// logical partitions `(first LBA relative to their EBR, sectors)`
    /// whose EBRs are every 2048 sectors from the extended start.
    pub(crate) fn mbr_image(
        sectors: u64,
        primaries: &[(u8, u32, u32)],
        logical: &[(u32, u32)],
    ) -> Vec<u8> {
        let mut img = vec![0u8; (sectors * 512) as usize];
        for (slot, &(kind, first, count)) in primaries.iter().enumerate() {
            put_entry(&mut img[..512], slot, kind, first, count);
            if PartitionType::Mbr(kind).is_extended() {
                for (i, &(rel, count)) in logical.iter().enumerate() {
                    let ebr = first as usize + 2048 * i;
                    let s = &mut img[ebr * 512..][..512];
                    put_entry(s, 0, 0x83, rel, count);
                    if i + 1 < logical.len() {
                        put_entry(s, 1, 0x05, 2048 * (i as u32 + 1), 2048);
                    }
                    s[510..512].copy_from_slice(&BOOT_SIGNATURE);
                }
            }
        }
        img[510..512].copy_from_slice(&BOOT_SIGNATURE);
        img
    }

    /// An image with a protective MBR and a GPT (primary and backup) of
    /// `entries` `(type GUID, first LBA, last LBA, name)`, in a 128-entry
    /// array, with sectors of `sector_size`.
    pub(crate) fn gpt_image(
        sector_size: u64,
        sectors: u64,
        entries: &[(&str, u64, u64, &str)],
    ) -> Vec<u8> {
        let ss = sector_size as usize;
        let mut img = vec![0u8; ss * sectors as usize];
        put_entry(
            &mut img[..512],
            0,
            GPT_PROTECTIVE,
            1,
            (sectors - 1).min(u64::from(u32::MAX)) as u32,
        );
        img[510..512].copy_from_slice(&BOOT_SIGNATURE);
        let mut array = vec![0u8; 128 * 128];
        for (i, &(kind, first, last, name)) in entries.iter().enumerate() {
            let e = &mut array[128 * i..][..128];
            e[..16].copy_from_slice(&Guid::parse(kind).unwrap().0);
            e[16] = i as u8 + 1;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (j, unit) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        let array_sectors = (array.len() as u64).div_ceil(sector_size);
        let last = sectors - 1;
        let write_header = |img: &mut Vec<u8>, my: u64, alt: u64, entries_lba: u64| {
            let at = entries_lba as usize * ss;
            img[at..at + array.len()].copy_from_slice(&array);
            let h = &mut img[my as usize * ss..][..92];
            h[..8].copy_from_slice(GPT_SIGNATURE);
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[40..48].copy_from_slice(&(2 + array_sectors).to_le_bytes());
            h[48..56].copy_from_slice(&(last - 1 - array_sectors).to_le_bytes());
            h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
            let crc = crc32(h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
        };
        write_header(&mut img, 1, last, 2);
        write_header(&mut img, last, 1, last - array_sectors);
        img
    }

    fn read(img: &[u8]) -> Result<PartitionTable> {
        PartitionTable::read(Cursor::new(img), Path::new("/dev/vg0/test"))
    }

    fn summary(t: &PartitionTable) -> Vec<(u32, u64, u64, String)> {
        t.partitions()
            .iter()
            .map(|p| (p.number, p.start, p.size, p.kind.description().to_owned()))
            .collect()
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn guids_round_trip_through_text() {
        let g = Guid::parse(LINUX).unwrap();
        assert_eq!(g.0[..4], [0xAF, 0x3D, 0xC6, 0x0F]);
        assert_eq!(g.to_string(), LINUX);
        for bad in [
            "",
            "0FC63DAF84834772-8E79-3D69D8477DE4-",
            &LINUX.replace('F', "G"),
        ] {
            assert_eq!(Guid::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn no_signature_or_a_boot_sector_is_no_table() {
        assert_eq!(read(&[]).unwrap(), PartitionTable::None);
        assert_eq!(read(&[0u8; 4096]).unwrap(), PartitionTable::None);
        // A FAT boot sector: signature, but code where the entries are.
        let mut fat = vec![0u8; 4096];
        fat[510..512].copy_from_slice(&BOOT_SIGNATURE);
        fat[446] = 0xEB;
        assert_eq!(read(&fat).unwrap(), PartitionTable::None);
    }

    #[test]
    fn mbr_primaries_and_logical_partitions_are_numbered_like_linux() {
        // 1: Linux at 2048, 2: empty slot, 3: extended with two logical.
        let img = mbr_image(
            20480,
            &[(0x83, 2048, 2048), (0, 0, 0), (0x05, 8192, 8192)],
            &[(2048, 1024), (1024, 512)],
        );
        let table = read(&img).unwrap();
        assert_eq!(table.label(), "dos");
        assert_eq!(
            summary(&table),
            [
                (1, 2048 * 512, 2048 * 512, "Linux".to_owned()),
                (3, 8192 * 512, 8192 * 512, "Extended".to_owned()),
                (5, (8192 + 2048) * 512, 1024 * 512, "Linux".to_owned()),
                (6, (8192 + 2048 + 1024) * 512, 512 * 512, "Linux".to_owned()),
            ]
        );
        assert!(table.partition(6).unwrap().is_linux_filesystem());
        assert!(table.partition(2).is_none());
        assert_eq!(
            table.partition(5).unwrap().to_string(),
            "5: Linux, 512 KiB at offset 5242880"
        );
    }

    #[test]
    fn an_ebr_chain_that_loops_is_an_error_naming_the_offset() {
        let mut img = mbr_image(20480, &[(0x05, 2048, 8192)], &[(2048, 1024)]);
        // The first EBR links to itself.
        put_entry(&mut img[2048 * 512..][..512], 1, 0x05, 0, 2048);
        let err = read(&img).unwrap_err().to_string();
        assert_eq!(
            err,
            "/dev/vg0/test: offset 1048576: the chain of extended boot records loops back to this sector"
        );
        // A link outside the extended partition.
        put_entry(&mut img[2048 * 512..][..512], 1, 0x05, 9000, 2048);
        let err = read(&img).unwrap_err().to_string();
        assert!(err.contains("outside the extended partition"), "{err}");
        // An EBR without its signature.
        let mut img = mbr_image(20480, &[(0x05, 2048, 8192)], &[(2048, 1024)]);
        img[2048 * 512 + 510] = 0;
        let err = read(&img).unwrap_err().to_string();
        assert!(
            err.starts_with("/dev/vg0/test: offset 1048576: not an extended boot record"),
            "{err}"
        );
    }

    #[test]
    fn a_long_ebr_chain_is_bounded() {
        // 300 logical partitions of 1 sector, each EBR linking to the next.
        let mut img = vec![0u8; 700 * 2048 * 512 / 2048];
        let count = 300u32;
        put_entry(&mut img[..512], 0, 0x05, 1, 2 * count + 10);
        img[510..512].copy_from_slice(&BOOT_SIGNATURE);
        for i in 0..count {
            let s = &mut img[(1 + 2 * i as usize) * 512..][..512];
            put_entry(s, 0, 0x83, 1, 1);
            put_entry(s, 1, 0x05, 2 * (i + 1), 2);
            s[510..512].copy_from_slice(&BOOT_SIGNATURE);
        }
        let err = read(&img).unwrap_err().to_string();
        assert!(err.contains("more than 256 extended boot records"), "{err}");
    }

    #[test]
    fn partitions_beyond_the_device_or_on_the_table_are_errors() {
        let img = mbr_image(4096, &[(0x83, 2048, 4096)], &[]);
        assert_eq!(
            read(&img).unwrap_err().to_string(),
            "/dev/vg0/test: offset 446: partition 1 ends at byte 3145728, beyond the end of the device (2097152 bytes)"
        );
        let img = mbr_image(4096, &[(0x83, 2048, 16), (0x83, 0, 16)], &[]);
        assert_eq!(
            read(&img).unwrap_err().to_string(),
            "/dev/vg0/test: offset 462: partition 2 starts at sector 0, on the partition table itself"
        );
    }

    #[test]
    fn gpt_with_512_and_4096_byte_sectors() {
        for sector_size in [512u64, 4096] {
            let per_mib = (1 << 20) / sector_size;
            let img = gpt_image(
                sector_size,
                8 * per_mib,
                &[
                    (SWAP, per_mib, 2 * per_mib - 1, "swap"),
                    (LINUX, 2 * per_mib, 6 * per_mib - 1, "root"),
                ],
            );
            let table = read(&img).unwrap();
            let PartitionTable::Gpt {
                sector_size: found,
                from_backup,
                ..
            } = &table
            else {
                panic!("not GPT: {table:?}");
            };
            assert_eq!((*found, *from_backup), (sector_size, false));
            assert_eq!(
                summary(&table),
                [
                    (1, 1 << 20, 1 << 20, "Linux swap".to_owned()),
                    (2, 2 << 20, 4 << 20, "Linux filesystem".to_owned()),
                ]
            );
            assert_eq!(table.partition(2).unwrap().name, "root");
        }
    }

    #[test]
    fn a_damaged_primary_gpt_header_falls_back_to_the_backup() {
        let img = gpt_image(512, 16384, &[(LINUX, 2048, 4095, "")]);
        let mut bad = img.clone();
        bad[512 + 40] ^= 1; // first usable LBA: the header CRC no longer holds
        let table = read(&bad).unwrap();
        assert!(matches!(
            table,
            PartitionTable::Gpt {
                from_backup: true,
                ..
            }
        ));
        assert_eq!(table.partitions(), read(&img).unwrap().partitions());
        // Both damaged: the primary's error.
        let last = bad.len() - 512;
        bad[last + 40] ^= 1;
        let err = read(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("/dev/vg0/test: offset 512: GPT header CRC32 is "),
            "{err}"
        );
    }

    #[test]
    fn gpt_errors_name_the_structure() {
        let img = gpt_image(512, 16384, &[(LINUX, 2048, 4095, "")]);
        let last = img.len() - 512;
        let both = |f: &dyn Fn(&mut [u8], usize)| {
            let mut bad = img.clone();
            f(&mut bad, 512);
            f(&mut bad, last);
            read(&bad).unwrap_err().to_string()
        };
        // A flipped entry: the array CRC fails.
        let mut bad = img.clone();
        bad[1024 + 33] ^= 1;
        bad[last - 32 * 512 + 33] ^= 1;
        assert!(
            read(&bad)
                .unwrap_err()
                .to_string()
                .contains("offset 1024: GPT entry array CRC32 is"),
        );
        // No header at all after a protective MBR.
        let err = both(&|b, at| b[at] = b'X');
        assert!(err.contains("no GPT header (\"EFI PART\")"), "{err}");
        // A header with a huge entry count (CRC fixed up, so only the bound
        // stops it).
        let fix = |b: &mut [u8], at: usize| {
            b[at + 16..at + 20].fill(0);
            let crc = crc32(&b[at..at + 92]);
            b[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        };
        let err = both(&|b, at| {
            b[at + 80..at + 84].copy_from_slice(&u32::MAX.to_le_bytes());
            fix(b, at);
        });
        assert!(err.contains("is larger than 1048576 bytes"), "{err}");
        let err = both(&|b, at| {
            b[at + 84..at + 88].copy_from_slice(&100u32.to_le_bytes());
            fix(b, at);
        });
        assert!(
            err.contains("GPT entry size 100 is not a power of two"),
            "{err}"
        );
        let err = both(&|b, at| {
            b[at + 12..at + 16].copy_from_slice(&4000u32.to_le_bytes());
        });
        assert!(
            err.contains("GPT header size 4000 is outside 92..=512"),
            "{err}"
        );
    }

    #[test]
    fn truncated_images_are_clear_errors() {
        let img = gpt_image(512, 16384, &[(LINUX, 2048, 4095, "")]);
        // Cut after the header: the entry array is missing; the backup
        // header is gone too.
        let err = read(&img[..600 + 512]).unwrap_err().to_string();
        assert!(
            err.contains("truncated: the GPT entry array needs 16384 bytes here"),
            "{err}"
        );
        let mbr = mbr_image(20480, &[(0x05, 2048, 8192)], &[(2048, 1024)]);
        let err = read(&mbr[..2048 * 512 + 100]).unwrap_err().to_string();
        assert!(err.contains("ends at byte"), "{err}");
    }

    /// xorshift: deterministic noise for the mutation test.
    fn next(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn mutated_and_cut_tables_never_panic() {
        let images = [
            mbr_image(
                20480,
                &[(0x83, 2048, 2048), (0x05, 8192, 8192)],
                &[(2048, 1024), (1024, 512), (8, 8)],
            ),
            gpt_image(
                512,
                16384,
                &[(LINUX, 2048, 4095, "a"), (SWAP, 4096, 8191, "")],
            ),
            gpt_image(4096, 2048, &[(LINUX, 256, 511, "b")]),
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..3000 {
            let base = &images[(next(&mut x) % 3) as usize];
            let mut img = base.clone();
            // Flip bytes in the structures (the first 40 KiB and the EBRs).
            for _ in 0..(next(&mut x) % 8 + 1) {
                let region = if next(&mut x).is_multiple_of(4) {
                    img.len()
                } else {
                    40960
                };
                let at = (next(&mut x) as usize) % region.min(img.len());
                img[at] = next(&mut x) as u8;
            }
            if next(&mut x).is_multiple_of(3) {
                let cut = (next(&mut x) as usize) % img.len();
                img.truncate(cut);
            }
            // Whatever the result, it is not a panic, and every partition
            // found lies on the device.
            if let Ok(table) = read(&img) {
                for p in table.partitions() {
                    assert!(p.end() <= img.len() as u64, "{p:?}");
                }
            }
        }
    }

    /// Makes an image with sfdisk from `script` (`DEV` in it stands for the
    /// image's path), or `None` (with a message)
    /// if sfdisk is not installed.
    fn sfdisk_image(dir: &Path, name: &str, mib: u64, script: &str) -> Option<PathBuf> {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let child = Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipped: sfdisk (util-linux fdisk package) cannot run: {e}");
                return None;
            }
        };
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.replace("DEV", &path.to_string_lossy()).as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sfdisk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(path)
    }

    /// What `sfdisk --json` says: (number, start, size) in bytes, and the
    /// type as sfdisk writes it (hex id or GUID).
    fn sfdisk_says(path: &Path) -> Vec<(u32, u64, u64, String)> {
        let out = Command::new("sfdisk")
            .arg("--json")
            .arg(path)
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let table = &json["partitiontable"];
        let ss = table["sectorsize"].as_u64().unwrap();
        table["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let node = p["node"].as_str().unwrap();
                let digits =
                    node.len() - node.chars().rev().take_while(char::is_ascii_digit).count();
                (
                    node[digits..].parse().unwrap(),
                    p["start"].as_u64().unwrap() * ss,
                    p["size"].as_u64().unwrap() * ss,
                    p["type"].as_str().unwrap().to_uppercase(),
                )
            })
            .collect()
    }

    fn ours(table: &PartitionTable) -> Vec<(u32, u64, u64, String)> {
        table
            .partitions()
            .iter()
            .map(|p| {
                let kind = match p.kind {
                    PartitionType::Mbr(id) => format!("{id:X}"),
                    PartitionType::Gpt(g) => g.to_string(),
                };
                (p.number, p.start, p.size, kind)
            })
            .collect()
    }

    #[test]
    fn sfdisk_tables_read_as_sfdisk_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let scripts = [
            (
                "dos",
                "label: dos\n,1M,83\n,1M,82\n,,E\n,1M,83\n,2M,83\n,,83\n",
            ),
            ("gpt", "label: gpt\n,1M,U\n,2M,S\n,,L\n"),
            (
                "gpt-sparse",
                "label: gpt\nDEV3 : start=2048, size=2048, type=L\nDEV7 : start=8192, size=4096, type=L\n",
            ),
        ];
        for (name, script) in scripts {
            let Some(path) = sfdisk_image(dir.path(), name, 12, script) else {
                return;
            };
            let table = PartitionTable::read(std::fs::File::open(&path).unwrap(), &path).unwrap();
            assert_eq!(table.label(), &name[..3]);
            let expected = sfdisk_says(&path);
            assert!(expected.len() >= 2, "{name}: {expected:?}");
            assert_eq!(ours(&table), expected, "{name}");
        }
    }
}
