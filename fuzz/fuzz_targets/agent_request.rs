//! Fuzzes the agent's side of the protocol: `AgentRequest::read_from` and
//! `receive_digest` over the agent's input stream, and the JSON decoders of
//! the request and the report (`blockdiff_run::remote`). The request comes
//! from the backup host and the report from the remote host, either of
//! which may be hostile: any input must be refused or accepted, never
//! panic, and what is accepted must be what the agent can act on (every
//! value checked) and must survive being encoded again unchanged.
#![no_main]

use std::io::{self, Read};

use blockdiff_fuzz::Trickle;
use blockdiff_run::remote::protocol::PacketReader;
use blockdiff_run::remote::{AgentReport, AgentRequest, receive_digest};
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
    if let Ok(report) = AgentReport::decode(data) {
        let again = AgentReport::decode(&report.encode()).expect("a report re-encoded decodes");
        assert_eq!(again, report, "a report changed on the round trip");
    }
});
