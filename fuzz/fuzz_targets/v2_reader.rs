//! Fuzzes the readers of the v2 diff file in `archive_format`: `DiffFile`
//! (random access: header, footer and index at open, frames on demand) and
//! `StreamReader` (front to back, as from a pipe), over the same bytes.
//!
//! Both must agree on whether the whole file reads, and on success on every
//! frame's extents and payload. A successful read must have increasing,
//! non-overlapping extents and payloads of exactly the length their data
//! extents need.
//!
//! Every header, frame, index and footer carries a CRC32, which mutations
//! almost always break. So the input is also checked a second time with
//! every CRC it holds recomputed (see `fix_crcs`), which lets the fuzzer
//! reach the checks behind them.
#![no_main]

use std::io::Read;

use archive_format::{
    DIFF_MAGIC, DiffFile, DiffHeader, DiffSummary, Extent, ExtentKind, Frame, FrameDecompressor,
    StreamReader, V2_HEADER_LEN, data_len,
};
use blockdiff_fuzz::Trickle;
use libfuzzer_sys::fuzz_target;

/// Inputs up to this length are also streamed one byte per read call.
const TRICKLE_MAX: usize = 4096;

// Layout constants of the format (archive-format/FORMAT.md), used only to
// recompute CRCs.
const FRAME_MAGIC: &[u8; 4] = b"BDFR";
const FRAME_HEADER_LEN: usize = 24;
const EXTENT_LEN: u64 = 16;
const FOOTER_LEN: usize = 32;
const END_MAGIC: &[u8; 8] = b"BDIFEND\n";

/// One of the readers, stepped frame by frame.
enum Reader<'a> {
    /// `DiffFile::open` failed (by its message), or it opened.
    File(Result<DiffFile<Vec<u8>>, String>, FrameDecompressor),
    /// A `StreamReader` over the slice; `None` once it failed or ended.
    Slice(Option<StreamReader<&'a [u8]>>),
    /// A `StreamReader` over `Trickle`.
    Trickle(Option<StreamReader<Trickle<'a>>>),
}

/// What one step gave.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Frame `i` was read into the frame buffer.
    Frame,
    /// The file ended cleanly; its header and the index's summary.
    End(DiffHeader, DiffSummary),
    /// An error, by its message.
    Error(String),
}

/// Steps a stream reader: a frame, the clean end, or an error. After the
/// end or an error the reader is dropped.
fn stream_step<R: Read>(slot: &mut Option<StreamReader<R>>, frame: &mut Frame) -> Step {
    let Some(r) = slot.as_mut() else {
        panic!("stream reader stepped after it ended");
    };
    let step = match r.next_frame(frame) {
        Ok(true) => return Step::Frame,
        Ok(false) => {
            let summary = *r
                .summary()
                .expect("next_frame returned false without a summary");
            // A finished reader stays finished.
            assert!(
                !r.next_frame(frame).expect("next_frame after the end"),
                "next_frame returned a frame after the end"
            );
            Step::End(*r.header(), summary)
        }
        Err(e) => Step::Error(e.to_string()),
    };
    *slot = None;
    step
}

impl Reader<'_> {
    /// Reads frame `i` (or finds the end) into `frame`.
    fn step(&mut self, i: usize, frame: &mut Frame) -> Step {
        match self {
            Reader::File(Err(e), _) => Step::Error(e.clone()),
            Reader::File(Ok(d), decompressor) => {
                if i == d.frames().len() {
                    return Step::End(*d.header(), *d.summary());
                }
                match d.read_frame(i, frame, decompressor) {
                    Ok(()) => {
                        assert_eq!(
                            frame.extents,
                            d.frame_extents(i),
                            "frame {i}: read_frame's extents differ from the index"
                        );
                        Step::Frame
                    }
                    Err(e) => Step::Error(e.to_string()),
                }
            }
            Reader::Slice(r) => stream_step(r, frame),
            Reader::Trickle(r) => stream_step(r, frame),
        }
    }
}

/// The invariants of a whole successful read: `frames` are its frames.
fn check_success(header: &DiffHeader, summary: &DiffSummary, frames: &[FrameSummary]) {
    let bs = header.block_size;
    let size = summary.source_size;
    assert!(bs >= 1, "block size 0 was accepted");
    let blocks_in_source = size.div_ceil(u64::from(bs));
    let mut prev_end: Option<u64> = None;
    let (mut data_blocks, mut zero_blocks, mut raw) = (0u64, 0u64, 0u64);
    for (i, f) in frames.iter().enumerate() {
        assert!(!f.extents.is_empty(), "frame {i} has no extent");
        let mut need = 0u64;
        for e in &f.extents {
            assert!(e.blocks >= 1, "frame {i}: empty extent {e:?}");
            let end = e
                .first_block
                .checked_add(u64::from(e.blocks))
                .unwrap_or_else(|| panic!("frame {i}: extent {e:?} ends beyond u64"));
            if let Some(p) = prev_end {
                assert!(
                    e.first_block >= p,
                    "frame {i}: extent {e:?} starts before the previous one ends ({p})"
                );
            }
            assert!(
                end <= blocks_in_source,
                "frame {i}: extent {e:?} ends beyond the {blocks_in_source} blocks of the source"
            );
            prev_end = Some(end);
            match e.kind {
                ExtentKind::Data => {
                    data_blocks += u64::from(e.blocks);
                    need += data_len(e.first_block, u64::from(e.blocks), bs, size);
                }
                ExtentKind::Zero => zero_blocks += u64::from(e.blocks),
            }
        }
        assert_eq!(
            f.payload_len, need,
            "frame {i}: payload of {} bytes, but its data extents hold {need} (block size {bs}, source size {size})",
            f.payload_len
        );
        raw += need;
    }
    assert_eq!(
        (summary.data_blocks, summary.zero_blocks, summary.raw_bytes),
        (data_blocks, zero_blocks, raw),
        "the summary's counts disagree with the frames"
    );
    if header.source_size != archive_format::UNKNOWN_SIZE {
        assert_eq!(header.source_size, size, "header and index source sizes");
    }
}

/// What the invariants need of a frame once it was compared.
struct FrameSummary {
    extents: Vec<Extent>,
    payload_len: u64,
}

/// Reads `data` with every reader in lock step and checks that they agree.
fn check(data: &[u8]) {
    let mut readers = vec![
        Reader::File(
            DiffFile::open(data.to_vec()).map_err(|e| e.to_string()),
            FrameDecompressor::default(),
        ),
        Reader::Slice(None),
    ];
    // A reader that fails on the header fails the whole file.
    let mut header_errors = Vec::new();
    match StreamReader::new(data) {
        Ok(r) => readers[1] = Reader::Slice(Some(r)),
        Err(e) => header_errors.push(e.to_string()),
    }
    if data.len() <= TRICKLE_MAX {
        let trickle = Trickle::new(data);
        match StreamReader::new(trickle) {
            Ok(r) => {
                assert!(
                    header_errors.is_empty(),
                    "only the one-byte reader read the header"
                );
                readers.push(Reader::Trickle(Some(r)));
            }
            Err(e) => {
                let e = e.to_string();
                assert_eq!(
                    header_errors.first(),
                    Some(&e),
                    "the one-byte reader failed on the header differently"
                );
            }
        }
    }
    if !header_errors.is_empty() {
        if let Reader::File(Ok(_), _) = readers[0] {
            panic!(
                "DiffFile::open accepted a file whose header StreamReader rejects: {}",
                header_errors[0]
            );
        }
        // Nothing more to compare: no reader got past the header (the
        // file reader failed at open).
        return;
    }

    let mut frames: Vec<Frame> = (0..readers.len()).map(|_| Frame::default()).collect();
    let mut seen = Vec::new();
    // Which readers are still going, and how each ended.
    let mut ends: Vec<Option<Step>> = (0..readers.len()).map(|_| None).collect();
    // The step each reader ended at.
    let mut end_at = vec![0usize; readers.len()];
    let mut i = 0usize;
    while ends.iter().any(Option::is_none) {
        for (k, r) in readers.iter_mut().enumerate() {
            if ends[k].is_some() {
                continue;
            }
            let step = r.step(i, &mut frames[k]);
            if step != Step::Frame {
                ends[k] = Some(step);
                end_at[k] = i;
            }
        }
        // The stream readers read the same bytes the same way: they step
        // in lock step, with the same frames and the same errors.
        if let Some(t) = ends.get(2) {
            assert_eq!(
                &ends[1], t,
                "frame {i}: one-byte reader disagrees with slice reader"
            );
            if ends[1].is_none() {
                assert_eq!(
                    frames[1], frames[2],
                    "frame {i}: one-byte reader's frame differs"
                );
            }
        }
        // Frames both the file reader and the stream reader returned are
        // compared once the whole file is known to read (below); keep what
        // the invariants need now, so that memory stays one frame per
        // reader.
        if ends[0].is_none() && ends[1].is_none() {
            assert_eq!(
                frames[0].extents, frames[1].extents,
                "frame {i}: DiffFile and StreamReader extents differ"
            );
            assert_eq!(
                frames[0].payload, frames[1].payload,
                "frame {i}: DiffFile and StreamReader payloads differ"
            );
            seen.push(FrameSummary {
                extents: std::mem::take(&mut frames[1].extents),
                payload_len: frames[1].payload.len() as u64,
            });
        }
        i += 1;
    }

    let file_end = ends[0].take().expect("loop ran to every reader's end");
    let stream_end = ends[1].take().expect("loop ran to every reader's end");
    match (&file_end, &stream_end) {
        (Step::End(fh, fs), Step::End(sh, ss)) => {
            assert_eq!(
                end_at[0], end_at[1],
                "DiffFile and StreamReader read different numbers of frames"
            );
            assert_eq!(seen.len(), end_at[0], "frames compared");
            assert_eq!(fh, sh, "DiffFile and StreamReader headers differ");
            assert_eq!(fs, ss, "DiffFile and StreamReader summaries differ");
            check_success(fh, fs, &seen);
        }
        (Step::Error(_), Step::Error(_)) => {}
        _ => panic!(
            "DiffFile ended with {file_end:?} but StreamReader with {stream_end:?} (after {} common frames)",
            seen.len()
        ),
    }
}

fn put_crc(out: &mut [u8], at: usize, crc: u32) {
    out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// `data` with every CRC it holds recomputed: the header's, those of the
/// frames that follow it back to back, the index's (in the footer) and the
/// footer's. Parts that cannot be found are left alone.
fn fix_crcs(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    if out.len() < V2_HEADER_LEN || out[..8] != DIFF_MAGIC {
        return out;
    }
    let crc = crc32fast::hash(&out[..V2_HEADER_LEN - 4]);
    put_crc(&mut out, V2_HEADER_LEN - 4, crc);

    let mut pos = V2_HEADER_LEN;
    while pos + FRAME_HEADER_LEN <= out.len() && &out[pos..pos + 4] == FRAME_MAGIC {
        let total = FRAME_HEADER_LEN as u64
            + u64::from(u32_at(&out, pos + 8)) * EXTENT_LEN
            + u64::from(u32_at(&out, pos + 16));
        let Some(end) = (pos as u64)
            .checked_add(total)
            .filter(|e| *e <= out.len() as u64)
        else {
            break;
        };
        let end = end as usize;
        let mut h = crc32fast::Hasher::new();
        h.update(&out[pos..pos + 20]);
        h.update(&out[pos + FRAME_HEADER_LEN..end]);
        put_crc(&mut out, pos + 20, h.finalize());
        pos = end;
    }

    let len = out.len();
    if len >= V2_HEADER_LEN + FOOTER_LEN && &out[len - 8..] == END_MAGIC {
        let footer = len - FOOTER_LEN;
        let index = u64::from_le_bytes(out[footer..footer + 8].try_into().expect("8 bytes"));
        if index <= footer as u64 {
            let crc = crc32fast::hash(&out[index as usize..footer]);
            put_crc(&mut out, footer + 16, crc);
        }
        let crc = crc32fast::hash(&out[footer..footer + 20]);
        put_crc(&mut out, footer + 20, crc);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let fixed = fix_crcs(data);
    if fixed != data {
        check(&fixed);
    }
});
