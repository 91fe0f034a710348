use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::skip::SkipRead;

/// How a diff file is compressed as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Stored as is (`NAME.N`).
    #[default]
    None,
    /// gzip, as the original's `-z` wrote it (`NAME.N.gz`).
    Gzip,
}

/// The three bytes every gzip member starts with (magic and deflate).
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

impl Compression {
    /// The file name suffix of a diff compressed this way (`""` or `".gz"`).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
        }
    }

    /// Guesses the compression of a stream from its first bytes.
    ///
    /// A legacy stream starts with its block size; one that started with the
    /// gzip magic would need a block size of 559,903 bytes (`0x088B1F`),
    /// which [`LegacyWriter`](crate::LegacyWriter) refuses to write.
    pub fn detect(first_bytes: &[u8]) -> Compression {
        if first_bytes.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }

    /// Wraps `inner` in the matching decompressor.
    pub fn reader<'a, R: SkipRead + Send + 'a>(self, inner: R) -> Box<dyn SkipRead + Send + 'a> {
        match self {
            Compression::None => Box::new(inner),
            Compression::Gzip => Box::new(MultiGzDecoder::new(io::BufReader::with_capacity(
                256 << 10,
                inner,
            ))),
        }
    }

    /// Reads the first bytes of `inner` to [`detect`](Self::detect) its
    /// compression, and returns the compression and a reader of the
    /// decompressed stream (the bytes read are not lost).
    pub fn sniff<'a, R: Read + Send + 'a>(
        mut inner: R,
    ) -> io::Result<(Compression, Box<dyn SkipRead + Send + 'a>)> {
        let mut head = [0u8; GZIP_MAGIC.len()];
        let got = crate::read_full(&mut inner, &mut head)?;
        let compression = Compression::detect(&head[..got]);
        let whole = io::Cursor::new(head[..got].to_vec()).chain(inner);
        Ok((compression, compression.reader(whole)))
    }

    /// Wraps `inner` in the matching compressor (gzip at level 6, as
    /// `gzip -f`).
    pub fn writer<W: Write>(self, inner: W) -> CompressedWriter<W> {
        match self {
            Compression::None => CompressedWriter::Plain(inner),
            Compression::Gzip => {
                CompressedWriter::Gzip(GzEncoder::new(inner, flate2::Compression::new(6)))
            }
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        })
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            _ => Err(format!("unknown compression '{s}' (expected none or gzip)")),
        }
    }
}

/// A writer that compresses (or not) what it is given. Call
/// [`finish`](Self::finish): dropping it loses the compressor's tail.
#[derive(Debug)]
pub enum CompressedWriter<W: Write> {
    /// No compression.
    Plain(W),
    /// gzip.
    Gzip(GzEncoder<W>),
}

impl<W: Write> CompressedWriter<W> {
    /// Writes the compressor's tail and returns the inner writer, flushed.
    pub fn finish(self) -> io::Result<W> {
        let mut inner = match self {
            CompressedWriter::Plain(w) => w,
            CompressedWriter::Gzip(g) => g.finish()?,
        };
        inner.flush()?;
        Ok(inner)
    }
}

impl<W: Write> Write for CompressedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            CompressedWriter::Plain(w) => w.write(buf),
            CompressedWriter::Gzip(g) => g.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            CompressedWriter::Plain(w) => w.write_all(buf),
            CompressedWriter::Gzip(g) => g.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            CompressedWriter::Plain(w) => w.flush(),
            CompressedWriter::Gzip(g) => g.flush(),
        }
    }
}
