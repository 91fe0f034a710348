//! The one place where a diff format picks its sink.

use std::io::Write;
use std::path::PathBuf;

use archive_format::{DigestFormat, Fingerprint};

use super::sink::{LegacySink, NoEncoding, V2Encoder, V2EncoderState, V2Frame, V2Sink, misuse};
use super::{ChunkEncoder, DiffSink, DumpPlan, DumpedChunk};
use crate::Result;
use crate::store::DiffFormat;

/// The sink of a [`DiffFormat`]: a [`LegacySink`] or a [`V2Sink`], chosen
/// by [`FormatSink::new`], so that code that writes "the chain's format"
/// does not match on the format itself.
///
/// A legacy diff is written as the stream itself: when the format says
/// gzip (`DiffFormat::Legacy(Compression::Gzip)`), the writer given is the
/// one that compresses (`Compression::writer`), since only its owner knows
/// how its bytes end.
#[derive(Debug)]
pub enum FormatSink<W: Write> {
    /// The original blockdiff's stream.
    Legacy(LegacySink<W>),
    /// A v2 file.
    V2(V2Sink<W>),
}

impl<W: Write> FormatSink<W> {
    /// A sink writing `format` to `inner`; `path` names it in errors.
    pub fn new(format: DiffFormat, inner: W, path: impl Into<PathBuf>) -> Self {
        match format {
            DiffFormat::Legacy(_) => FormatSink::Legacy(LegacySink::new(inner, path)),
            DiffFormat::V2 { compression, level } => {
                FormatSink::V2(V2Sink::new(inner, path, compression, level))
            }
        }
    }

    /// Returns the underlying writer once the dump has ended (or if it
    /// never began).
    pub fn into_inner(self) -> Result<W> {
        match self {
            FormatSink::Legacy(s) => s.into_inner(),
            FormatSink::V2(s) => s.into_inner(),
        }
    }
}

/// The work a [`FormatSink`] has done on the hashing threads: none for a
/// legacy diff, compressing frames for v2.
#[derive(Debug, Clone, Copy)]
pub enum FormatEncoder {
    /// A legacy diff's: nothing.
    Legacy(NoEncoding),
    /// A v2 diff's.
    V2(V2Encoder),
}

/// A hashing thread's state for a [`FormatEncoder`].
#[derive(Debug)]
pub enum FormatEncoderState {
    /// Nothing, for a legacy diff.
    Legacy,
    /// A v2 encoder's compression context.
    V2(V2EncoderState),
}

/// What a [`FormatEncoder`] made of a chunk.
#[derive(Debug, Default)]
pub enum FormatEncoded {
    /// Nothing (a legacy diff's chunk, or one not encoded yet).
    #[default]
    Nothing,
    /// A v2 chunk's frames.
    V2(V2Frame),
}

impl ChunkEncoder for FormatEncoder {
    type State = FormatEncoderState;
    type Output = FormatEncoded;

    fn state(&self) -> Result<FormatEncoderState> {
        Ok(match self {
            FormatEncoder::Legacy(_) => FormatEncoderState::Legacy,
            FormatEncoder::V2(e) => FormatEncoderState::V2(e.state()?),
        })
    }

    fn encode(
        &self,
        state: &mut FormatEncoderState,
        chunk: &DumpedChunk<'_>,
        out: &mut FormatEncoded,
    ) -> Result<()> {
        match (self, state) {
            (FormatEncoder::Legacy(_), FormatEncoderState::Legacy) => Ok(()),
            (FormatEncoder::V2(e), FormatEncoderState::V2(state)) => {
                // The output's buffers are reused chunk after chunk: it is
                // made v2 once.
                if let FormatEncoded::V2(frame) = out {
                    return e.encode(state, chunk, frame);
                }
                let mut frame = V2Frame::default();
                let encoded = e.encode(state, chunk, &mut frame);
                *out = FormatEncoded::V2(frame);
                encoded
            }
            _ => Err(misuse("encoder used with another format's state")),
        }
    }
}

impl<W: Write> DiffSink for FormatSink<W> {
    type Encoder = FormatEncoder;

    fn digest_format(&self) -> DigestFormat {
        match self {
            FormatSink::Legacy(s) => s.digest_format(),
            FormatSink::V2(s) => s.digest_format(),
        }
    }

    fn begin(&mut self, plan: &DumpPlan) -> Result<FormatEncoder> {
        Ok(match self {
            FormatSink::Legacy(s) => FormatEncoder::Legacy(s.begin(plan)?),
            FormatSink::V2(s) => FormatEncoder::V2(s.begin(plan)?),
        })
    }

    fn reads_data(&self) -> bool {
        match self {
            FormatSink::Legacy(s) => s.reads_data(),
            FormatSink::V2(s) => s.reads_data(),
        }
    }

    fn write_chunk(&mut self, chunk: &DumpedChunk<'_>, encoded: &FormatEncoded) -> Result<()> {
        match (self, encoded) {
            (FormatSink::Legacy(s), FormatEncoded::Nothing) => s.write_chunk(chunk, &()),
            (FormatSink::V2(s), FormatEncoded::V2(frame)) => s.write_chunk(chunk, frame),
            _ => Err(misuse("given a chunk encoded for another format")),
        }
    }

    fn end(&mut self, source_size: u64, fingerprint: Option<Fingerprint>) -> Result<()> {
        match self {
            FormatSink::Legacy(s) => s.end(source_size, fingerprint),
            FormatSink::V2(s) => s.end(source_size, fingerprint),
        }
    }
}

#[cfg(test)]
mod tests {
    use archive_format::{Compression, DigestReader, DigestWriter, FrameCompression};

    use super::*;
    use crate::dump::{DumpOptions, DumpSource, dump};
    use crate::progress::NoProgress;

    /// A source of a few MiB with zero, repeated and random blocks, and a
    /// short last block.
    fn source() -> Vec<u8> {
        let mut data = vec![0u8; (3 << 20) + 1000];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for (i, b) in data.iter_mut().enumerate() {
            if (i >> 16) % 3 != 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = if (i >> 16) % 3 == 1 {
                    x as u8
                } else {
                    (i >> 8) as u8
                };
            }
        }
        data
    }

    /// The diff and digest of a full dump of `data` through `sink`.
    fn dumped<S: DiffSink>(data: &[u8], sink: &mut S) -> Vec<u8> {
        let mut digest = Vec::new();
        let options = DumpOptions {
            threads: 2,
            ..DumpOptions::default()
        };
        dump(
            DumpSource::from_bytes(data, "source"),
            None::<&mut DigestReader<&[u8]>>,
            sink,
            &mut DigestWriter::new(&mut digest, "digest"),
            &options,
            &mut NoProgress,
        )
        .unwrap();
        digest
    }

    #[test]
    fn each_format_writes_what_its_own_sink_writes() {
        let data = source();
        let formats = [
            DiffFormat::Legacy(Compression::None),
            DiffFormat::V2 {
                compression: FrameCompression::Zstd,
                level: 1,
            },
            DiffFormat::V2 {
                compression: FrameCompression::None,
                level: 0,
            },
        ];
        for format in formats {
            let mut sink = FormatSink::new(format, Vec::new(), "diff");
            let digest = dumped(&data, &mut sink);
            let diff = sink.into_inner().unwrap();
            let (own_diff, own_digest) = match format {
                DiffFormat::Legacy(_) => {
                    let mut own = LegacySink::new(Vec::new(), "diff");
                    let digest = dumped(&data, &mut own);
                    (own.into_inner().unwrap(), digest)
                }
                DiffFormat::V2 { compression, level } => {
                    let mut own = V2Sink::new(Vec::new(), "diff", compression, level);
                    let digest = dumped(&data, &mut own);
                    (own.into_inner().unwrap(), digest)
                }
            };
            // A v2 header holds its creation time: compare the rest.
            let skip = match format {
                DiffFormat::Legacy(_) => 0,
                DiffFormat::V2 { .. } => archive_format::V2_HEADER_LEN,
            };
            assert!(diff.len() > skip, "{format:?}");
            assert!(
                diff[skip..] == own_diff[skip..],
                "{format:?}: the diffs differ"
            );
            assert_eq!(digest, own_digest, "{format:?}: the digests differ");
        }
    }

    #[test]
    fn a_chunk_encoded_for_another_format_is_an_error() {
        let mut sink = FormatSink::new(DiffFormat::default(), Vec::new(), "diff");
        let chunk = DumpedChunk {
            offset: 0,
            first_block: 0,
            data: &[],
            block_size: archive_format::BlockSize::DEFAULT,
            changed: &[],
            zero: &[],
        };
        let e = sink
            .write_chunk(&chunk, &FormatEncoded::Nothing)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid option: diff sink given a chunk encoded for another format"
        );
        let mut legacy = FormatSink::new(DiffFormat::Legacy(Compression::None), Vec::new(), "d");
        let e = legacy
            .write_chunk(&chunk, &FormatEncoded::V2(V2Frame::default()))
            .unwrap_err();
        assert!(e.to_string().ends_with("another format"), "{e}");
    }
}
