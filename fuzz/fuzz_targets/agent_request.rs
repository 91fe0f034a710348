//! Fuzzes the agent's side of the protocol: `AgentRequest::read_from` and
//! `receive_digest` over the agent's input stream, and the JSON decoders of
//! the request and the report (`blockdiff_run::remote`); for restores, the
//! restore request and report, and the lists of ranges and blocks. The request comes
//! from the backup host and the report from the remote host, either of
//! which may be hostile: any input must be refused or accepted, never
//! panic, and what is accepted must be what the agent can act on (every
//! value checked) and must survive being encoded again unchanged.
#![no_main]

use std::io::{self, Read};

use blockdiff_fuzz::Trickle;
use blockdiff_run::remote::protocol::PacketReader;
use blockdiff_run::remote::{
    AgentReport, AgentRequest, RestoreAgentReport, RestoreRequest, parse_blocks, parse_needs,
    receive_digest,
};
use libfuzzer_sys::fuzz_target;

/// Inputs up to this length are also read one byte per call.
const TRICKLE_MAX: usize = 4096;

/// The request and the digest's length read from a stream, or where it
/// failed.
fn read_stream<R: Read>(inner: R) -> Result<(AgentRequest, u64), String> {
    let mut reader = PacketReader::new(inner);
    let request = AgentRequest::read_from(&mut reader).map_err(|e| e.to_string())?;
    let digest = receive_digest(&mut reader, &mut io::sink()).map_err(|e| e.to_string())?;
    Ok((request, digest))
}

fn accepted(request: &AgentRequest) {
    // Every value the agent acts on was checked.
    request
        .block_size()
        .expect("an accepted request has a valid block size");
    request
        .source
        .to_spec()
        .expect("an accepted request has a valid source");
    request
        .format
        .requested()
        .expect("an accepted request has a valid format");
    request
        .consistency
        .check()
        .expect("an accepted request has valid consistency options");
    request
        .polite
        .check()
        .expect("an accepted request has valid polite options");
    let again = AgentRequest::decode(&request.encode()).expect("a request re-encoded decodes");
    assert_eq!(&again, request, "a request changed on the round trip");
}

fuzz_target!(|data: &[u8]| {
    let streamed = read_stream(data);
    if let Ok((request, _)) = &streamed {
        accepted(request);
    }
    if data.len() <= TRICKLE_MAX {
        let trickled = read_stream(Trickle::new(data));
        assert_eq!(
            streamed.as_ref().map(|(r, n)| (r, *n)).ok(),
            trickled.as_ref().map(|(r, n)| (r, *n)).ok(),
            "one-byte reader read something else"
        );
    }
    if let Ok(request) = AgentRequest::decode(data) {
        accepted(&request);
    }
    if let Ok(request) = RestoreRequest::decode(data) {
        request
            .polite
            .check()
            .expect("an accepted restore request has valid polite options");
        request
            .block_hash_key()
            .expect("an accepted restore request has a valid key");
        let again =
            RestoreRequest::decode(&request.encode()).expect("a restore request re-encoded decodes");
        assert_eq!(again, request, "a restore request changed on the round trip");
    }
    if let Ok(report) = RestoreAgentReport::decode(data) {
        let again = RestoreAgentReport::decode(&report.encode()).expect("a report re-encoded decodes");
        assert_eq!(again, report, "a restore report changed on the round trip");
    }
    if let Some((size, payload)) = data.split_first_chunk::<8>() {
        let size = u64::from_le_bytes(*size);
        let mut ranges = Vec::new();
        if parse_needs(payload, size, &mut ranges).is_ok() {
            let mut end = 0;
            for (i, &(a, b)) in ranges.iter().enumerate() {
                assert!(a < b && b <= size, "an accepted range is empty or too far");
                assert!(i == 0 || a > end, "accepted ranges overlap or touch");
                end = b;
            }
        }
    }
    let _ = parse_blocks(data);
    if let Ok(report) = AgentReport::decode(data) {
        let again = AgentReport::decode(&report.encode()).expect("a report re-encoded decodes");
        assert_eq!(again, report, "a report changed on the round trip");
    }
});
