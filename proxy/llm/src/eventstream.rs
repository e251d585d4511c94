//! Writing `application/vnd.amazon.eventstream` frames, e.g. for fake
//! Bedrock servers in tests. Frames carry real prelude and message CRCs
//! (written by `aws-smithy-eventstream`).

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};

/// Encodes one frame from headers and payload.
pub fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let headers = headers
        .iter()
        .map(|(n, v)| Header::new(n.to_string(), HeaderValue::String(v.to_string().into())))
        .collect();
    let message = Message::new_from_parts(headers, payload.to_vec());
    let mut out = Vec::new();
    // Writing into a Vec only fails for oversized frames or header values,
    // which callers of this helper do not produce; an empty result shows it.
    if write_message_to(&message, &mut out).is_err() {
        out.clear();
    }
    out
}

/// An event frame (`:message-type event`, `:event-type`, JSON content type),
/// as Bedrock's ConverseStream sends them.
pub fn encode_event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode_message(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// An exception frame (`:message-type exception`, `:exception-type`).
pub fn encode_exception(exception_type: &str, payload: &[u8]) -> Vec<u8> {
    encode_message(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        payload,
    )
}
