//! The files a mounted generation shows: the whole image, and each
//! partition of its partition table as a file of its own.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use blockdiff_core::GenerationReader;
use disk_partitions::PartitionTable;

use crate::Result;

/// One file of a mounted generation: a byte range of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Its name in the mount: `image`, or `partN` for partition N.
    pub name: String,
    /// Where it starts in the image.
    pub start: u64,
    /// Its length.
    pub size: u64,
    /// The partition's number, for a partition.
    pub partition: Option<u32>,
}

/// The image of a generation, and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFiles {
    files: Vec<ImageFile>,
}

impl ImageFiles {
    /// The files of the image `reader` reads: `image`, then `partN` for
    /// every partition of its MBR or GPT (none if it has no table). The
    /// table is the guest's, untrusted: a malformed one is an error naming
    /// `name` and the offset.
    pub fn read(reader: &GenerationReader, name: &Path) -> Result<Self> {
        let size = reader.size();
        let mut files = vec![ImageFile {
            name: "image".into(),
            start: 0,
            size,
            partition: None,
        }];
        let table = PartitionTable::read(SeekableReader { reader, pos: 0 }, name)?;
        for p in table.partitions() {
            // Extended partitions hold only the chain of logical ones.
            if p.kind.is_extended() {
                continue;
            }
            files.push(ImageFile {
                name: format!("part{}", p.number),
                start: p.start,
                size: p.size,
                partition: Some(p.number),
            });
        }
        Ok(ImageFiles { files })
    }

    /// The files, the image first.
    pub fn files(&self) -> &[ImageFile] {
        &self.files
    }

    /// The file named `name`.
    pub fn by_name(&self, name: &str) -> Option<&ImageFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Partition `number`'s file.
    pub fn partition(&self, number: u32) -> Option<&ImageFile> {
        self.files.iter().find(|f| f.partition == Some(number))
    }
}

/// A [`GenerationReader`] as a `Read + Seek`, for the partition-table
/// parser.
struct SeekableReader<'a> {
    reader: &'a GenerationReader,
    pos: u64,
}

impl Read for SeekableReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .reader
            .read_at(buf, self.pos)
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SeekableReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            SeekFrom::End(d) => (self.reader.size(), d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        self.pos = base
            .0
            .checked_add_signed(base.1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}
